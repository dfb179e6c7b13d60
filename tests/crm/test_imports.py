import io
import json
import os

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from hypothesis import given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from config import clock
from crm import imports, person_import, services
from crm.models import AuditEntry, FieldType, ImportFileBlock, ImportJob, Person
from crm.selectors import find_by_identifier, person_history
from encryption.models import DataKey
from tests.factories import FieldDefinitionFactory, PersonFactory, UserFactory, import_people

pytestmark = pytest.mark.django_db
VISA = "4111 1111 1111 1111"
HEADER = "first_name,last_name,email,email_opt_in,national_id,card_number\n"


def stop_processing(person):
    # Planted as data until the stop-processing service lands (as in test_services).
    Person.objects.filter(pk=person.pk).update(processing_stopped_at=clock.now())


def run_import(text: str, *, mapping=None, user=None) -> ImportJob:
    """Upload, map (default mapping unless given), start, and run inline like the worker."""
    return import_people(text, user=user, mapping=mapping)


def errors_by_line(job) -> dict:
    return {e["line"]: e["errors"] for e in job.errors}


def test_good_rows_import_while_bad_rows_are_reported_with_their_line_numbers():
    FieldDefinitionFactory(key="budget", field_type=FieldType.NUMBER)
    text = (
        "first_name,email,email_opt_in,card_number,budget\n"   # line 1
        "Ada,ada@example.org,none,,10\n"                        # 2 good
        "Bad,not-an-email,none,,\n"                             # 3 bad email
        "Opt,opt@example.org,double_opt_in,,\n"                 # 4 opt-in not allowed
        "Cus,cus@example.org,none,,lots\n"                      # 5 bad custom value
        "Car,car@example.org,none,4111 1111 1111 1112,\n"       # 6 Luhn fails
        '"Quo"te,quote@example.org,none,,\n'                    # 7 malformed quotes
        "Many,many@example.org,none,,,extra\n"                  # 8 too many columns
        "Grace,grace@example.org,single_opt_in_user,4111111111111111,\n"  # 9 good
    )
    job = run_import(text)
    assert job.state == ImportJob.State.DONE
    assert (job.total_rows, job.processed_rows, job.created_count, job.error_count) == (8, 8, 2, 6)
    errors = errors_by_line(job)
    assert sorted(errors) == [3, 4, 5, 6, 7, 8]
    assert "email" in errors[3]
    assert "email_opt_in" in errors[4]
    assert "custom.budget" in errors[5]
    assert "card_number" in errors[6]
    assert "row" in errors[7] and "row" in errors[8]
    assert set(Person.objects.values_list("email", flat=True)) == {
        "ada@example.org", "grace@example.org"}
    grace = Person.objects.get(email="grace@example.org")
    assert grace.email_opt_in == "single_opt_in_user"
    assert Person.objects.get(email="ada@example.org").custom == {"budget": 10}


def test_line_numbers_count_physical_lines_of_quoted_multiline_fields():
    text = (
        "first_name,company,email\n"
        'Ada,"Analytical\nEngines",ada@example.org\n'   # lines 2-3
        "Bad,Co,nope\n"                                  # line 4
    )
    job = run_import(text)
    assert errors_by_line(job).keys() == {4}
    assert Person.objects.get(email="ada@example.org").company == "Analytical\nEngines"


_CSV_BITS = st.sampled_from(["a", "b,c", ",", '"', '""', '"x,y"', '"multi\nline"', "\n",
                             "\r\n", "\r", " ", "é", '"unclosed', 'x"y'])


@settings(max_examples=300, deadline=None)
@given(bits=st.lists(_CSV_BITS, max_size=40), cuts=st.lists(st.integers(0, 200), max_size=5))
def test_the_upload_counts_the_records_the_run_reads(bits, cuts):
    """`import_job_create` counts records with `_count_records`, the run reads them with
    `_records`: for any text, cut into pieces anywhere, blank lines and malformed records
    included, both see the same records."""
    text = "".join(bits)
    edges = sorted({0, len(text), *(c for c in cuts if c < len(text))})
    pieces = [text[a:b] for a, b in zip(edges, edges[1:], strict=False)]
    expected = len(list(imports._records(imports._reader(iter(pieces)))))
    assert imports._count_records(imports._reader(iter(pieces))) == expected
    reader = imports._reader(iter(pieces))  # as the upload does: the header read first
    first = next(imports._records(reader), None)
    assert (first is not None) + imports._count_records(reader) == expected


def test_dedupe_by_normalised_email_within_the_file_and_against_existing_people():
    PersonFactory(email="known@example.org", first_name="Staff", last_name="Kept")
    text = HEADER + (
        "New,One,new@example.org,,,\n"
        "Dup,Case,  NEW@Example.org ,,,\n"
        "Other,Name,Known@example.org,,,\n"
    )
    job = run_import(text)
    assert (job.created_count, job.duplicate_count, job.error_count) == (1, 2, 0)
    assert Person.objects.filter(email="new@example.org").get().first_name == "New"
    known = Person.objects.get(email="known@example.org")
    assert (known.first_name, known.last_name) == ("Staff", "Kept")


def test_duplicates_across_chunks_are_skipped(monkeypatch):
    monkeypatch.setattr(imports, "CHUNK_ROWS", 2)
    rows = [f"P{i},X,p{i % 3}@example.org,,,\n" for i in range(7)]
    job = run_import(HEADER + "".join(rows))
    assert (job.created_count, job.duplicate_count, job.processed_rows) == (3, 4, 7)


def test_stopped_people_are_untouched_and_counted_apart():
    person = PersonFactory(email="stopped@example.org", first_name="Old")
    stop_processing(person)
    before = Person.objects.values().get(pk=person.pk)
    trail = list(AuditEntry.objects.filter(person_id=person.pk).values_list("id", flat=True))
    job = run_import(HEADER + "New,Name,stopped@example.org,single_opt_in_user,AB123456,\n")
    assert (job.stopped_count, job.created_count, job.duplicate_count) == (1, 0, 0)
    assert Person.objects.values().get(pk=person.pk) == before  # import_job still unset
    assert list(AuditEntry.objects.filter(person_id=person.pk).values_list("id", flat=True)) \
        == trail


def test_a_locked_field_is_never_written_by_import():
    person = PersonFactory(email="locked@example.org")
    Person.objects.filter(pk=person.pk).update(locked_fields=["national_id"])
    run_import(HEADER + "A,B,locked@example.org,,AB123456,\n")
    person.refresh_from_db()
    assert person.national_id is None and person.national_id_mask == ""


def test_sensitive_columns_are_stored_encrypted_masked_and_findable():
    FieldDefinitionFactory(key="tax_code", is_encrypted=True, mask_rule="last:3")
    job = run_import(
        "email,national_id,card_number,tax_code\n"
        f"ada@example.org,ab-123456,{VISA},TAXCODE987\n"
    )
    assert job.created_count == 1
    person = Person.objects.get(email="ada@example.org")
    assert person.national_id_mask == "•••••3456"
    assert person.card_number_mask == "••••••••••••1111"
    assert person.custom["tax_code"]["mask"] == "•••••••987"
    with connection.cursor() as cursor:
        cursor.execute("SELECT national_id::text, card_number::text, custom::text "
                       "FROM crm_person WHERE id = %s", [person.pk])
        raw = " ".join(cursor.fetchone())
    for plain in ("AB-123456", "ab-123456", "4111111111111111", "TAXCODE987"):
        assert plain not in raw
        assert plain.encode().hex() not in raw
    assert find_by_identifier("national_id", "AB-123456") == [person.pk]
    assert find_by_identifier("card_number", VISA) == [person.pk]
    assert DataKey.objects.filter(subject_id=person.pk).exists()


def test_imported_people_name_their_import_as_the_record_of_their_creation():
    """An import writes no audit row per person: each names its job, which records who ran it,
    when and from which file, and their history shows the creation from both."""
    user = UserFactory()
    job = run_import(HEADER + f"Ada,Lovelace,ada@example.org,,AB123456,{VISA}\n", user=user)
    person = Person.objects.get(email="ada@example.org")
    assert person.import_job == job and job.created_by == user
    assert not AuditEntry.objects.filter(person_id=person.pk).exists()
    (step,) = person_history(person)
    assert (step.action, step.source, step.actor, step.import_job) == ("create", "import", user,
                                                                       job)
    assert step.at == person.created_at
    assert step.fields == sorted(job.mapping.values())  # names, never values
    services.person_update(person=person, data={"first_name": "Augusta"}, actor=user,
                           source=services.Source.STAFF)
    assert [s.action for s in person_history(person)] == ["update", "create"]
    assert [s.action for s in person_history(person, limit=1)] == ["update"]


def test_an_explicit_mapping_picks_and_renames_columns():
    FieldDefinitionFactory(key="budget", field_type=FieldType.NUMBER)
    text = "Name,E-mail,Notes,Budget\nAda,ada@example.org,ignore me,12\n"
    run_import(text, mapping={"Name": "first_name", "E-mail": "email", "Budget": "budget",
                              "Notes": ""})
    person = Person.objects.get(email="ada@example.org")
    assert (person.first_name, person.custom) == ("Ada", {"budget": 12})


@pytest.mark.parametrize(("mapping", "message"), [
    ({"Nope": "email"}, "no column"),
    ({"Name": "processing_stopped_at"}, "not a field"),
    ({"Name": "email", "Mail": "email"}, "mapped from both"),
    ({}, "at least one"),
    (["email"], "object"),
])
def test_bad_mappings_are_refused(mapping, message):
    job = imports.import_job_create(upload=io.BytesIO(b"Name,Mail\nA,a@example.org\n"),
                                    source="staff")
    with pytest.raises(Exception) as raised:
        imports.import_job_set_mapping(job=job, mapping=mapping)
    assert message in str(raised.value)


def test_row_validation_runs_no_query_per_row(monkeypatch):
    monkeypatch.setattr(imports, "CHUNK_ROWS", 500)
    FieldDefinitionFactory(key="budget", field_type=FieldType.NUMBER)
    rows = "".join(f"N{i},L,p{i}@example.org,none,AB{i:06d},\n" for i in range(1000))
    job = imports.import_job_create(upload=io.BytesIO((HEADER + rows).encode()),
                                    source="staff")
    imports.import_job_set_mapping(job=job)
    imports.import_job_start(job=job)
    with CaptureQueriesContext(connection) as queries:
        imports.import_job_run(job.pk)
    assert Person.objects.count() == 1000
    assert len(queries) < 50  # a few per chunk (two here), none per row (a thousand)


def test_the_file_is_sealed_at_rest_and_shredded_after_the_run():
    job = imports.import_job_create(
        upload=io.BytesIO((HEADER + f"A,B,a@example.org,,,{VISA}\n").encode()), source="staff")
    stored = b"".join(bytes(b) for b in ImportFileBlock.objects.filter(job=job)
                      .values_list("data", flat=True))
    assert b"a@example.org" not in stored and b"4111" not in stored
    imports.import_job_set_mapping(job=job)
    imports.import_job_start(job=job)
    imports.import_job_run(job.pk)
    assert not ImportFileBlock.objects.filter(job=job).exists()
    assert not DataKey.objects.filter(subject_id=job.pk).exists()


@pytest.mark.parametrize(("content", "message"), [
    (b"", "empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not"),
    ("é,ü\n1,2\n".encode("latin-1"), "UTF-8"),
    (b",,\n1,2,3\n", "name the columns"),
    (b"email,email\na,b\n", "twice"),
])
def test_unusable_files_are_refused_before_anything_is_stored(content, message):
    with pytest.raises(Exception) as raised:
        imports.import_job_create(upload=io.BytesIO(content), source="staff")
    assert message in str(raised.value)
    assert not ImportJob.objects.exists()


def test_preview_shows_each_rows_outcome_masks_sensitive_values_and_writes_nothing():
    PersonFactory(email="known@example.org")
    job = imports.import_job_create(upload=io.BytesIO((HEADER + (
        f"A,B,a@example.org,,,{VISA}\n"
        "C,D,known@example.org,,,\n"
        "E,F,bad,,,\n"
        "G,H,x@example.org,,,,\n"
    )).encode()), source="staff")
    imports.import_job_set_mapping(job=job)
    preview = imports.import_preview(job=job)
    assert [(p["line"], p["outcome"]) for p in preview] == [
        (2, "created"), (3, "duplicate"), (4, "error"), (5, "error")]
    assert preview[0]["values"]["card_number"] == "••••••••••••1111"
    assert "email" in preview[2]["errors"]
    assert Person.objects.count() == 1
    assert ImportJob.objects.get(pk=job.pk).state == "draft"


def test_a_bom_and_crlf_line_endings_are_read(monkeypatch):
    monkeypatch.setattr(imports, "BLOCK_CHARS", 7)  # cut pieces mid-line and mid-CRLF
    text = "\ufefffirst_name,email\r\nAda,ada@example.org\r\nBob,bob@example.org\r\nX,bad\r\n"
    job = run_import(text)
    assert (job.created_count, job.total_rows) == (2, 3)
    assert errors_by_line(job).keys() == {4}


def test_the_errors_kept_are_capped_while_all_are_counted(monkeypatch):
    monkeypatch.setattr(ImportJob, "ERRORS_KEPT", 5)
    job = run_import("email\n" + "bad\n" * 12 + "ok@example.org\n")
    assert (job.error_count, len(job.errors), job.created_count) == (12, 5, 1)
    assert [e["line"] for e in job.errors] == [2, 3, 4, 5, 6]


def test_a_run_resumes_after_the_last_committed_chunk(monkeypatch):
    monkeypatch.setattr(imports, "CHUNK_ROWS", 2)
    rows = "".join(f"N{i},L,,,,\n" for i in range(5))  # no email: a re-run would duplicate
    job = imports.import_job_create(upload=io.BytesIO((HEADER + rows).encode()),
                                    source="staff")
    imports.import_job_set_mapping(job=job)
    imports.import_job_start(job=job)
    real = person_import.person_import_write
    calls = []

    def dies_on_second_chunk(prepared, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OperationalError("worker lost")
        return real(prepared, **kwargs)

    monkeypatch.setattr(person_import, "person_import_write", dies_on_second_chunk)
    with pytest.raises(OperationalError):
        imports.import_job_run(job.pk)
    assert ImportJob.objects.get(pk=job.pk).processed_rows == 2
    monkeypatch.setattr(person_import, "person_import_write", real)
    job = imports.import_job_run(job.pk)
    assert (job.state, job.processed_rows, Person.objects.count()) == ("done", 5, 5)


# -- API ---------------------------------------------------------------------------------------

API = "/api/imports/"


def csv_upload(text: str, name="people.csv"):
    return SimpleUploadedFile(name, text.encode(), content_type="text/csv")


def test_api_post_returns_a_job_and_get_shows_progress_counts_and_row_errors(
        staff_api, staff_user, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_api.post(API, {"file": csv_upload(
            HEADER + "Ada,L,ada@example.org,,,\nBad,L,nope,,,\n")}, format="multipart")
    assert response.status_code == 202, response.json()
    job_id = response.json()["id"]
    assert response["Location"].endswith(f"{API}{job_id}/")
    body = staff_api.get(f"{API}{job_id}/").json()
    assert body["state"] == "done"
    assert body["progress"] == {"processed": 2, "total": 2}
    assert body["counts"] == {"created": 1, "skipped_duplicates": 0, "skipped_stopped": 0,
                              "errors": 1}
    assert body["errors"] == [{"line": 3, "errors": {"email": ["Enter a valid email address."]}}]
    assert body["created_by"] == staff_user.username
    assert Person.objects.filter(email="ada@example.org").exists()


def test_api_takes_a_mapping_as_json(staff_api, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_api.post(API, {
            "file": csv_upload("Mail,Name\nada@example.org,Ada\n"),
            "mapping": json.dumps({"Mail": "email", "Name": "first_name"}),
        }, format="multipart")
    assert response.status_code == 202, response.json()
    assert Person.objects.get(email="ada@example.org").first_name == "Ada"


@pytest.mark.parametrize(("payload", "field"), [
    ({"file": SimpleUploadedFile("empty.csv", b"", content_type="text/csv")}, "file"),
    ({"file": SimpleUploadedFile("pic.png", b"\x89PNG\r\n\x1a\n\x00\x00", "image/png")},
     "file"),
    ({"file": SimpleUploadedFile("a.csv", b"\xff\xfe\x00a", content_type="text/csv")},
     "file"),
    ({}, "file"),
    ({"file": SimpleUploadedFile("a.csv", b"Name\nAda\n", content_type="text/csv")},
     "mapping"),
    ({"file": SimpleUploadedFile("a.csv", b"email\na@b.org\n", content_type="text/csv"),
      "mapping": "{not json"}, "mapping"),
    ({"file": SimpleUploadedFile("a.csv", b"email\na@b.org\n", content_type="text/csv"),
      "mapping": json.dumps({"email": "is_superuser"})}, "mapping"),
])
def test_api_refuses_unusable_uploads_with_400_not_500(staff_api, payload, field):
    response = staff_api.post(API, payload, format="multipart")
    assert response.status_code == 400
    assert field in response.json()
    assert not ImportJob.objects.exists()


def test_api_needs_a_staff_token():
    from tests.conftest import _api

    upload = {"file": csv_upload("email\na@example.org\n")}
    assert APIClient().post(API, upload, format="multipart").status_code == 401
    assert APIClient().get(API).status_code == 401
    no_role = _api(UserFactory())
    assert no_role.post(API, {"file": csv_upload("email\na@example.org\n")},
                        format="multipart").status_code == 403
    assert no_role.get(API).status_code == 403
    assert not Person.objects.exists()


# -- staff UI ----------------------------------------------------------------------------------

def test_staff_upload_map_preview_and_run_an_import(staff_client,
                                                    django_capture_on_commit_callbacks):
    PersonFactory(email="known@example.org")
    changelist = staff_client.get(reverse("admin:crm_lead_changelist"))
    upload_url = reverse("admin:crm_lead_import")
    assert upload_url.encode() in changelist.content
    response = staff_client.post(upload_url, {"file": csv_upload(
        "Name,Mail,Card\n"
        f"Ada,ada@example.org,{VISA}\n"
        "Kim,known@example.org,\n"
        "Bad,nope,\n")})
    assert response.status_code == 302
    job = ImportJob.objects.get()
    assert response["Location"] == reverse("admin:crm_lead_import_job", args=[job.pk])
    page = staff_client.get(response["Location"])
    assert page.status_code == 200 and b"Name" in page.content
    mapping = {"column_0": "first_name", "column_1": "email", "column_2": "card_number"}
    preview = staff_client.post(response["Location"], {**mapping, "preview": "1"})
    rows = preview.context["preview"]
    assert [(r["line"], r["outcome"]) for r in rows] == [
        (2, "created"), (3, "duplicate"), (4, "error")]
    assert "••••••••••••1111".encode() in preview.content
    assert VISA.replace(" ", "").encode() not in preview.content
    assert not Person.objects.filter(email="ada@example.org").exists()
    with django_capture_on_commit_callbacks(execute=True):
        started = staff_client.post(response["Location"], {**mapping, "start": "1"})
    assert started.status_code == 302
    done = staff_client.get(started["Location"])
    assert done.context["job"].state == "done"
    assert b"Enter a valid email address." in done.content
    assert Person.objects.get(email="ada@example.org").card_number_mask.endswith("1111")
    jobs = staff_client.get(reverse("admin:crm_importjob_changelist"))
    assert jobs.status_code == 200 and b"people.csv" in jobs.content


def test_staff_upload_of_a_non_csv_shows_the_error(staff_client):
    response = staff_client.post(reverse("admin:crm_person_import"), {
        "file": SimpleUploadedFile("pic.png", b"\x89PNG\r\n\x1a\n\x00\x00", "image/png")})
    assert response.status_code == 200
    assert "UTF-8" in response.context["form"].errors["file"][0]
    assert not ImportJob.objects.exists()


def test_import_pages_need_the_import_permission(client):
    client.force_login(UserFactory(is_staff=True))
    assert client.get(reverse("admin:crm_person_import")).status_code in (302, 403)


# -- command -----------------------------------------------------------------------------------

def test_import_people_command_imports_and_reports_row_errors(tmp_path, capsys):
    path = tmp_path / "people.csv"
    path.write_text("Mail,Name\nada@example.org,Ada\nnope,Bad\n")
    out, err = io.StringIO(), io.StringIO()
    call_command("import_people", str(path), "--mapping",
                 '{"Mail": "email", "Name": "first_name"}', stdout=out, stderr=err)
    assert "1 created" in out.getvalue()
    assert "line 3: email" in err.getvalue()
    person = Person.objects.get(email="ada@example.org")
    assert person.first_name == "Ada"
    assert person.import_job.source == "system" and person.import_job.file_name == "people.csv"


def test_import_people_command_refuses_a_bad_mapping_and_keeps_nothing(tmp_path):
    path = tmp_path / "people.csv"
    path.write_text("Mail\nada@example.org\n")
    with pytest.raises(CommandError, match="mapping|field"):
        call_command("import_people", str(path))
    assert not ImportJob.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_worker_run_writes_on_a_second_connection_while_preparing_the_next_chunk(monkeypatch):
    """Outside a transaction (a worker) the run is pipelined; cross-chunk duplicates are still
    caught while the chunk holding the first occurrence is being written."""
    monkeypatch.setattr(imports, "CHUNK_ROWS", 2)
    threads = set()
    real = person_import.person_import_write

    def write(prepared, **kwargs):
        import threading

        threads.add(threading.current_thread().name)
        return real(prepared, **kwargs)

    monkeypatch.setattr(person_import, "person_import_write", write)
    rows = "".join(f"N{i},L,p{i % 4}@example.org,,,{VISA if i % 2 else ''}\n" for i in range(9))
    job = run_import(HEADER + rows + "Bad,L,nope,,,\n")
    assert (job.state, job.processed_rows, job.created_count, job.duplicate_count,
            job.error_count) == ("done", 10, 4, 5, 1)
    assert Person.objects.count() == 4
    assert all(name.startswith("import-writer") for name in threads)
    # Only the people with a sealed value get a data key (as with person_create).
    assert len(find_by_identifier("card_number", VISA)) == DataKey.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_pipelined_run_commits_each_chunks_data_keys_before_its_people(monkeypatch):
    """The preparing thread writes a chunk's data keys (committed at once) while the writer
    COPYs the chunk before: a chunk whose write then fails leaves keys that seal nothing, and
    no person ever lacks the key of their sealed values."""
    monkeypatch.setattr(imports, "CHUNK_ROWS", 2)
    real, writes = person_import.person_import_write, []

    def write(prepared, **kwargs):
        writes.append(prepared)
        if len(writes) == 2:
            raise RuntimeError("the second chunk's write fails")
        return real(prepared, **kwargs)

    monkeypatch.setattr(person_import, "person_import_write", write)
    rows = "".join(f"N{i},L,p{i}@example.org,,,{VISA}\n" for i in range(6))
    job = run_import(HEADER + rows)
    assert (job.state, job.created_count) == ("failed", 2)
    people = set(Person.objects.values_list("pk", flat=True))
    keys = set(DataKey.objects.values_list("subject_id", flat=True))
    assert len(people) == 2 and people < keys and len(keys) == 6  # every chunk's keys
    assert sorted(find_by_identifier("card_number", VISA)) == sorted(people)


@pytest.mark.django_db(transaction=True)
def test_a_duplicate_of_a_chunk_not_yet_committed_two_chunks_back_is_skipped_without_a_retry(
        monkeypatch):
    """Chunk 3 is classified while chunk 1 is still being written and chunk 2 waits: both
    chunks' addresses count as known, so its duplicate never reaches the unique index."""
    import threading

    monkeypatch.setattr(imports, "CHUNK_ROWS", 1)
    prepared_three = threading.Event()
    prepares = []
    real_prepare = person_import.person_import_prepare
    real_write = person_import.person_import_write

    def prepare(**kwargs):
        prepares.append(sorted(kwargs.get("pending_emails") or ()))
        if len(prepares) == 3:
            prepared_three.set()
        return real_prepare(**kwargs)

    def write(prepared, **kwargs):
        assert prepared_three.wait(10)  # chunk 1 commits only after chunk 3 was classified
        return real_write(prepared, **kwargs)

    monkeypatch.setattr(person_import, "person_import_prepare", prepare)
    monkeypatch.setattr(person_import, "person_import_write", write)
    job = run_import("email\na@example.org\nb@example.org\na@example.org\n")
    assert (job.state, job.created_count, job.duplicate_count) == ("done", 2, 1)
    # Three preparations, no re-preparation after a refused write.
    assert prepares == [[], ["a@example.org"], ["a@example.org", "b@example.org"]]


def test_without_copy_the_same_rows_are_written_with_bulk_create(monkeypatch):
    """SQLite (`make run`) has no COPY: the rows go through bulk_create, same result."""
    from config.pgcopy import CopyRows

    real_init = CopyRows.__init__

    def without_copy(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self.postgres = False

    monkeypatch.setattr(CopyRows, "__init__", without_copy)
    FieldDefinitionFactory(key="tax_code", is_encrypted=True)
    job = run_import("email,card_number,tax_code\n"
                     f"ada@example.org,{VISA},TAX123\nada@example.org,,\n")
    assert (job.created_count, job.duplicate_count) == (1, 1)
    person = Person.objects.get()
    assert person.card_number_mask == "••••••••••••1111"
    assert find_by_identifier("card_number", VISA) == [person.pk]
    assert person.custom["tax_code"]["mask"]
    assert person.import_job == job


@pytest.mark.skipif(connection.vendor != "postgresql", reason="COPY is PostgreSQL's")
def test_copy_rows_round_trip_values_with_tabs_newlines_backslashes_and_the_end_marker():
    """COPY's text format: every special character a spreadsheet cell or a JSON value can hold
    arrives as written, and NULL stays apart from the empty string."""
    import uuid

    from config.pgcopy import CopyRows

    tricky = ["a\tb", "line\nbreak", "cr\rhere", "back\\slash", "\\.", "\\N", "", "née ✓"]
    rows = CopyRows(Person, now=clock.now())
    ids = []
    for i, text in enumerate(tricky):
        ids.append(uuid.uuid4())
        rows.add({"id": ids[-1], "first_name": text, "email": f"t{i}@example.org",
                  "custom": {"note": text, "quote": '"\\'}, "erased_at": None})
    assert rows.write() == len(tricky)
    for pk, text in zip(ids, tricky, strict=True):
        person = Person.objects.get(pk=pk)
        assert (person.first_name, person.custom) == (text, {"note": text, "quote": '"\\'})
        assert person.erased_at is None and person.last_name == ""


def test_imported_people_get_time_ordered_version_7_ids_in_file_order():
    import uuid

    job = run_import("email\n" + "".join(f"p{i}@example.org\n" for i in range(5)))
    assert job.created_count == 5
    ids = dict(Person.objects.values_list("email", "id"))
    in_file_order = [ids[f"p{i}@example.org"] for i in range(5)]
    assert all(pk.version == 7 and pk.variant == uuid.RFC_4122 for pk in in_file_order)
    assert in_file_order == sorted(in_file_order)


@pytest.mark.django_db(transaction=True)
def test_a_pipelined_run_shortens_the_gil_switch_interval_and_restores_it_even_when_it_fails(
        monkeypatch):
    import sys

    seen = []
    real = person_import.person_import_prepare

    def prepare(**kwargs):
        seen.append(sys.getswitchinterval())
        if len(seen) == 2:
            raise RuntimeError("boom")
        return real(**kwargs)

    monkeypatch.setattr(imports, "CHUNK_ROWS", 1)
    monkeypatch.setattr(person_import, "person_import_prepare", prepare)
    before = sys.getswitchinterval()
    job = run_import("email\nada@example.org\nbob@example.org\n")
    assert job.state == "failed"
    assert seen == [imports.WRITER_SWITCH_INTERVAL] * 2 and before > seen[0]
    assert sys.getswitchinterval() == before


def test_a_run_pauses_the_garbage_collector_and_restores_it_even_when_it_fails(monkeypatch):
    import gc

    seen = []

    def fail(**kwargs):
        seen.append(gc.isenabled())
        raise RuntimeError("boom")

    monkeypatch.setattr(person_import, "person_import_prepare", fail)
    assert gc.isenabled()
    job = run_import("email\nada@example.org\n")
    assert job.state == "failed" and seen == [False] and gc.isenabled()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="hash indexes are PostgreSQL's")
def test_a_blind_index_lookup_is_answered_by_its_hash_index():
    from encryption.blind_index import blind_index

    run_import(HEADER + f"Ada,L,ada@example.org,none,,{VISA}\n")
    tag = blind_index(VISA, context="crm.person.card_number")
    query = Person.objects.filter(card_number_bidx=tag).only("pk")
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan TO off")
        plan = query.explain()
    assert "person_card_number_bidx" in plan
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s",
                       ["person_card_number_bidx"])
        assert "USING hash" in cursor.fetchone()[0]


# -- sealing in a helper process ---------------------------------------------------------------

def card(i: int) -> str:
    body = f"4{i:014d}"
    total = sum(d * 2 - 9 if d > 4 else d * 2 if k % 2 == 0 else d
                for k, d in enumerate(int(c) for c in reversed(body)))
    return body + str((10 - total % 10) % 10)


def opened(person, field):
    from encryption.values import open_value

    return open_value(getattr(person, field).blob, subject_id=person.pk,
                      context=f"crm.person.{field}")


@pytest.fixture
def helpers(monkeypatch):
    """Every sealing helper a run starts, with the requests it was sent; runs of any size use
    one (chunks of 2 rows)."""
    from encryption.bulk import SealingHelper

    started = []
    real_init, real_submit = SealingHelper.__init__, SealingHelper.submit

    def init(self):
        real_init(self)
        self.requests = 0
        started.append(self)

    def submit(self, *args, **kwargs):
        self.requests += 1
        return real_submit(self, *args, **kwargs)

    monkeypatch.setattr(SealingHelper, "__init__", init)
    monkeypatch.setattr(SealingHelper, "submit", submit)
    monkeypatch.setattr(imports, "CHUNK_ROWS", 2)
    monkeypatch.setattr(imports, "SEALING_HELPER_ROWS", 1)
    return started


@pytest.mark.django_db(transaction=True)
def test_a_run_seals_in_a_helper_process_and_every_value_opens_and_is_findable(helpers):
    rows = "".join(f"N{i},L,p{i}@example.org,,ID{i:06d},{card(i) if i % 3 else ''}\n"
                   for i in range(9))
    job = run_import(HEADER + rows + "Dup,L,p1@example.org,,ID999999,\n")
    assert (job.state, job.created_count, job.duplicate_count) == ("done", 9, 1)
    assert len(helpers) == 1 and helpers[0].requests == 5 and not helpers[0].alive
    for i in range(9):
        person = Person.objects.get(email=f"p{i}@example.org")
        assert opened(person, "national_id") == f"ID{i:06d}"
        assert person.national_id_mask == "••••" + f"{i:06d}"[-4:]
        assert find_by_identifier("national_id", f"id-{i:06d}") == [person.pk]
        if i % 3:
            assert opened(person, "card_number") == card(i)
            assert find_by_identifier("card_number", card(i)) == [person.pk]
        else:
            assert person.card_number is None and person.card_number_mask == ""
    assert DataKey.objects.count() == 9
    assert set(DataKey.objects.values_list("master_key_id", flat=True)) == {"t1"}


@pytest.mark.django_db(transaction=True)
def test_when_the_helper_dies_mid_run_the_rest_is_sealed_in_process(helpers, monkeypatch):
    from encryption.bulk import SealingHelper

    real_result = SealingHelper.result

    def result(self):
        if self.requests == 2:  # the helper is killed with an answer still to read
            self._process.kill()
            self._process.wait()
        return real_result(self)

    monkeypatch.setattr(SealingHelper, "result", result)
    rows = "".join(f"N{i},L,p{i}@example.org,,ID{i:06d},{card(i)}\n" for i in range(8))
    job = run_import(HEADER + rows)
    assert (job.state, job.created_count) == ("done", 8)
    assert helpers[0].requests == 2 and not helpers[0].alive
    for i in range(8):
        person = Person.objects.get(email=f"p{i}@example.org")
        assert (opened(person, "national_id"), opened(person, "card_number")) == (
            f"ID{i:06d}", card(i))
    assert DataKey.objects.count() == 8


@pytest.mark.django_db(transaction=True)
def test_encrypted_custom_values_are_sealed_in_process_under_the_same_key_as_core_ones(
        helpers):
    from encryption.values import open_value

    FieldDefinitionFactory(key="tax_code", is_encrypted=True)
    job = run_import("email,national_id,tax_code\n" + "".join(
        f"p{i}@example.org,ID{i:06d},{f'TAX{i}' if i in (1, 3) else ''}\n"
        for i in range(6)))
    assert (job.state, job.created_count) == ("done", 6)
    # Chunks with a custom value to seal stay in process; the one without goes to the helper.
    assert helpers[0].requests == 1
    for i in range(6):
        person = Person.objects.get(email=f"p{i}@example.org")
        assert opened(person, "national_id") == f"ID{i:06d}"
        if i in (1, 3):
            import base64

            blob = base64.b64decode(person.custom["tax_code"]["$sealed"])
            assert open_value(blob, subject_id=person.pk,
                              context="crm.person.custom.tax_code") == f"TAX{i}"
    assert DataKey.objects.count() == 6


@pytest.mark.parametrize(("mapping", "rows", "started"), [
    ({"email": "email", "national_id": "national_id"}, 6, True),
    ({"email": "email", "national_id": "national_id"}, 5, False),  # too few to repay it
    ({"email": "email"}, 6, False),  # nothing to seal
])
def test_a_sealing_helper_starts_only_for_runs_it_repays(monkeypatch, mapping, rows, started):
    monkeypatch.setattr(imports, "SEALING_HELPER_ROWS", 6)
    job = ImportJob(header=["email", "national_id"], mapping=mapping, total_rows=rows)
    helper = imports._sealing_helper(job)
    try:
        assert (helper is not None) == started
    finally:
        if helper is not None:
            helper.close()
            assert not helper.alive


@pytest.mark.django_db(transaction=True)
def test_a_helper_that_stops_answering_is_given_up_after_its_timeout(helpers, monkeypatch):
    import signal

    from encryption.bulk import SealingHelper

    monkeypatch.setattr(SealingHelper, "TIMEOUT", 0.5)
    monkeypatch.setattr(SealingHelper, "STOP_WAIT", 0.2)
    real_init = SealingHelper.__init__

    def init(self):
        real_init(self)
        os.kill(self._process.pid, signal.SIGSTOP)  # alive, silent

    monkeypatch.setattr(SealingHelper, "__init__", init)
    rows = "".join(f"N{i},L,p{i}@example.org,,ID{i:06d},{card(i)}\n" for i in range(4))
    job = run_import(HEADER + rows)
    assert (job.state, job.created_count) == ("done", 4)
    assert not helpers[0].alive  # killed at the end of the run
    person = Person.objects.get(email="p3@example.org")
    assert opened(person, "card_number") == card(3)


def test_a_failed_run_logs_the_error_class_and_where_never_its_message(monkeypatch, caplog):
    def fail(*, rows, **kwargs):
        raise ValueError(f"bad row: {rows[0][1]['email']}")  # as a database error quotes one

    monkeypatch.setattr(person_import, "person_import_prepare", fail)
    job = run_import("email\nsecret.person@example.org\n")
    assert job.state == "failed"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "ValueError" in logged and "fail" in logged  # the class and the frame
    assert "secret.person" not in logged


def test_new_peoples_ids_are_version_7_uuids_counting_up_from_now():
    import time
    import uuid

    from crm.person_import import _uuid7_texts

    before = time.time_ns() // 1_000_000
    texts = _uuid7_texts(20_000)  # past 2**14: the counter carries into rand_a
    after = time.time_ns() // 1_000_000
    ids = [uuid.UUID(text) for text in texts]
    assert [str(i) for i in ids] == texts
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(before <= i.int >> 80 <= after for i in (ids[0], ids[-1]))
    assert len({i.int & (1 << 48) - 1 for i in ids}) == len(ids)  # random tails


@pytest.mark.skipif(connection.vendor != "postgresql", reason="COPY is PostgreSQL's")
def test_copy_rows_joined_columns_are_written_from_one_text_a_row():
    import uuid

    from config.pgcopy import CopyRows

    rows = CopyRows(Person, now=clock.now())
    slot, absent = rows.join("national_id_mask", "first_name")
    assert absent == ("", "")
    ids = [uuid.uuid4(), uuid.uuid4()]
    for i, pk in enumerate(ids):
        rows.add({"id": pk, "email": f"j{i}@example.org"})
    with pytest.raises(KeyError):  # a joined column has no slot of its own
        rows.add({"id": uuid.uuid4(), "first_name": "Ada"})
    with pytest.raises(ValueError):
        rows.join("last_name")  # rows were added
    rows.fill_joined(slot, ["••34\tAda", "\tGrace"])
    assert rows.write() == 2
    assert [Person.objects.values_list("national_id_mask", "first_name").get(pk=pk)
            for pk in ids] == [("••34", "Ada"), ("", "Grace")]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("garble", [
    lambda keys, joined: (keys.rpartition("\n")[0], joined),  # a person's data key left out
    lambda keys, joined: (keys, joined.rpartition("\n")[0]),  # a person's values left out
    lambda keys, joined: (keys, joined.split("\n")),  # not one text
    lambda keys, joined: (keys, "\n".join(joined.split("\n")[::-1])),  # lines swapped
    # two people's key rows naming each other (each key wrapped for the other)
    lambda keys, joined: ("\n".join(
        "\t".join(a.split("\t")[:1] + b.split("\t")[1:]) for a, b in zip(
            keys.split("\n"), keys.split("\n")[::-1], strict=True)), joined),
    # each person's values, sealed under their own key, in the other's cells
    lambda keys, joined: (keys, "\n".join(
        "\t".join(a.split("\t")[:3] + b.split("\t")[3:]) for a, b in zip(
            joined.split("\n"), joined.split("\n")[::-1], strict=True))),
    lambda keys, joined: (keys, joined.replace("\\\\x", "\\\\x00", 1)),  # a value altered
], ids=["key-missing", "line-missing", "not-text", "lines-swapped", "keys-crossed",
        "cells-swapped", "value-altered"])
def test_a_helper_answer_that_does_not_fit_is_sealed_again_in_process(
        helpers, monkeypatch, garble):
    from encryption.bulk import SealingHelper

    real_result = SealingHelper.result

    def result(self):
        return garble(*real_result(self))

    monkeypatch.setattr(SealingHelper, "result", result)
    rows = "".join(f"N{i},L,p{i}@example.org,,ID{i:06d},{card(i)}\n" for i in range(4))
    job = run_import(HEADER + rows)
    assert (job.state, job.created_count) == ("done", 4)
    assert not helpers[0].alive  # dropped at its first short answer
    for i in range(4):
        person = Person.objects.get(email=f"p{i}@example.org")
        assert (opened(person, "national_id"), opened(person, "card_number")) == (
            f"ID{i:06d}", card(i))
    assert DataKey.objects.count() == 4


@pytest.mark.django_db(transaction=True)
def test_the_helpers_true_answers_pass_its_check_when_people_without_values_come_between(
        helpers, caplog):
    # In each chunk of two, people 0, 3, 6 and 9 have no sensitive value (and get no key):
    # the check finds each checked person's key row past them.
    rows = "".join(f"N{i},L,p{i}@example.org,,{f'ID{i:06d}' if i % 3 else ''},"
                   f"{card(i) if i % 3 == 2 else ''}\n" for i in range(10))
    job = run_import(HEADER + rows)
    assert (job.state, job.created_count) == ("done", 10)
    assert helpers[0].requests == 5  # every chunk went to the helper and none came back
    assert "sealing in the import's own process" not in caplog.text
    for i in range(10):
        person = Person.objects.get(email=f"p{i}@example.org")
        assert (opened(person, "national_id") if i % 3 else person.national_id) == (
            f"ID{i:06d}" if i % 3 else None)
        assert (opened(person, "card_number") if i % 3 == 2 else person.card_number) == (
            card(i) if i % 3 == 2 else None)
    assert DataKey.objects.count() == 6


@pytest.mark.django_db
def test_copy_rows_leave_a_column_with_a_database_default_to_the_database():
    import datetime
    import uuid

    from config.pgcopy import CopyRows

    long_ago = datetime.datetime(2001, 1, 1, tzinfo=datetime.UTC)
    keys = CopyRows(DataKey, now=long_ago)
    assert "created_at" not in [f.attname for f in keys.fields]
    subject = uuid.uuid4()
    keys.add({"subject_id": subject, "key_id": "k1", "master_key_id": "t1", "wrapped": b"w"})
    assert keys.write() == 1
    assert DataKey.objects.get(subject_id=subject).created_at > long_ago  # the database's now


@pytest.mark.skipif(connection.vendor != "postgresql", reason="COPY is PostgreSQL's")
def test_copy_rows_line_template_writes_rows_alike_but_for_the_columns_given():
    import uuid

    from config.pgcopy import CopyRows, copy_text

    now = clock.now()
    audit = CopyRows(AuditEntry, now=now)
    line = audit.line_template("person_id", "fields", action="create", source="import",
                               at=now).format
    ids = [uuid.uuid4(), uuid.uuid4()]
    fields = [["email"], ["a{b}", "tab\there"]]  # braces survive str.format; tabs are escaped
    audit.add_text("\n".join(line(str(pk), copy_text(names)) for pk, names in zip(
        ids, fields, strict=True)), 2)
    assert audit.write() == 2
    rows = AuditEntry.objects.filter(person_id__in=ids)
    assert {(r.person_id, tuple(r.fields), r.action, r.source, r.at, r.actor_id)
            for r in rows} == {(pk, tuple(names), "create", "import", now, None)
                               for pk, names in zip(ids, fields, strict=True)}


@pytest.mark.skipif(connection.vendor != "postgresql", reason="COPY is PostgreSQL's")
def test_copy_rows_keyed_adder_sets_the_columns_of_known_keys_and_skips_the_rest():
    import uuid

    from config.pgcopy import CopyRows

    rows = CopyRows(Person, now=clock.now())
    add = rows.keyed_adder({"given": "first_name", "mail": "email"})
    pk = uuid.uuid4()
    add({"given": "tab\there", "mail": "k@example.org", "not_a_column": "x"}, id=pk,
        custom={"note": "back\\slash"})
    assert rows.write() == 1
    person = Person.objects.get(pk=pk)
    assert (person.first_name, person.email, person.custom, person.last_name) == (
        "tab\there", "k@example.org", {"note": "back\\slash"}, "")
