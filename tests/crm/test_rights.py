"""The data-subject rights on every write path: services, staff admin, API, import."""

from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from campaigns.gateway import Kind as MailKind
from campaigns.models import EmailMessage
from config import clock
from crm import extensions, rights, services
from crm.errors import ProcessingStopped, ServiceError
from crm.models import AuditEntry, Person, RightsRequest
from crm.roles import ADMIN_ONLY_PERMISSIONS, STAFF_PERMISSIONS
from tests.factories import AdminUserFactory, PersonFactory, StaffUserFactory, import_people

pytestmark = pytest.mark.django_db


def stop(person, **kwargs):
    return rights.processing_stop(person=person, source=services.Source.PORTAL, **kwargs)


# -- the register's deadline ----------------------------------------------------------------------

@pytest.mark.parametrize(("received", "due"), [
    (datetime(2026, 1, 15, 9, 30, tzinfo=UTC), datetime(2026, 2, 15, 9, 30, tzinfo=UTC)),
    (datetime(2026, 1, 31, 12, 0, tzinfo=UTC), datetime(2026, 2, 28, 12, 0, tzinfo=UTC)),
    (datetime(2028, 1, 31, 12, 0, tzinfo=UTC), datetime(2028, 2, 29, 12, 0, tzinfo=UTC)),
    (datetime(2026, 12, 20, 8, 0, tzinfo=UTC), datetime(2027, 1, 20, 8, 0, tzinfo=UTC)),
    (datetime(2026, 3, 31, 8, 0, tzinfo=UTC), datetime(2026, 4, 30, 8, 0, tzinfo=UTC)),
])
def test_a_request_is_due_one_calendar_month_after_receipt(received, due):
    person = PersonFactory()
    with clock.frozen(received):
        request = rights.rights_request_record(person=person, kind="access", source="portal")
    assert (request.received_at, request.due_at, request.state) == (received, due, "open")


def test_a_repeated_request_while_one_is_open_is_the_same_request():
    person = PersonFactory()
    first = rights.rights_request_record(person=person, kind="access", source="portal")
    assert rights.rights_request_record(person=person, kind="access", source="portal") == first
    rights.rights_request_close(request=first)
    assert rights.rights_request_record(person=person, kind="access", source="portal") != first


def test_unknown_kind_is_a_field_error():
    with pytest.raises(ServiceError) as error:
        rights.rights_request_record(person=PersonFactory(), kind="rectify", source="staff")
    assert error.value.field == "kind"


def test_refusing_a_request_needs_a_note_and_records_who():
    admin = AdminUserFactory()
    request = rights.rights_request_record(person=PersonFactory(), kind="access", source="staff")
    with pytest.raises(ServiceError):
        rights.rights_request_close(request=request, actor=admin, state="refused")
    closed = rights.rights_request_close(request=request, actor=admin, state="refused",
                                         note="Identity could not be verified")
    assert (closed.state, closed.handled_by, closed.handled_at is not None) == (
        "refused", admin, True)


def test_the_register_outlives_the_deleted_record():
    person = PersonFactory()
    request = rights.rights_request_record(person=person, kind="access", source="portal")
    rights.person_delete_record(person=person, source="staff")
    request.refresh_from_db()
    assert request.person is None and request.person_ref == person.pk


# -- stop processing ------------------------------------------------------------------------------

def test_stop_locks_the_record_registers_the_restriction_and_audits_names_only():
    person = PersonFactory()
    stopped = stop(person, note="asked by phone")
    assert stopped.processing_stopped_at is not None
    request = RightsRequest.objects.get(person_ref=person.pk)
    assert (request.kind, request.state, request.source) == ("restriction", "done", "portal")
    entry = AuditEntry.objects.filter(person_id=person.pk).first()
    assert (entry.action, entry.fields) == ("processing_stop", ["processing_stopped_at"])
    with pytest.raises(ProcessingStopped):
        services.person_update(person=person, data={"first_name": "X"}, source="staff")


def test_stop_is_idempotent():
    person = PersonFactory()
    first = stop(person).processing_stopped_at
    assert stop(person).processing_stopped_at == first
    assert RightsRequest.objects.filter(person_ref=person.pk).count() == 1


def test_the_contact_lifts_their_own_stop_without_a_reason():
    person = PersonFactory()
    stop(person)
    resumed = rights.processing_resume(person=person, source="portal")
    assert resumed.processing_stopped_at is None
    request = RightsRequest.objects.get(person_ref=person.pk)
    assert request.lifted_at is not None and request.lifted_by is None


def test_staff_without_the_dedicated_permission_cannot_lift():
    person = PersonFactory()
    stop(person)
    staff = StaffUserFactory()
    assert "crm.lift_processing_stop" not in STAFF_PERMISSIONS
    with pytest.raises(rights.RightsPermissionDenied) as error:
        rights.processing_resume(person=person, source="staff", actor=staff, reason="x")
    assert error.value.status_code == 403
    person.refresh_from_db()
    assert person.processing_stopped_at is not None


@pytest.mark.parametrize("reason", ["", "   "])
def test_an_admin_lift_needs_a_reason(reason):
    person = PersonFactory()
    stop(person)
    with pytest.raises(ServiceError) as error:
        rights.processing_resume(person=person, source="staff", actor=AdminUserFactory(),
                                 reason=reason)
    assert error.value.field == "reason"
    person.refresh_from_db()
    assert person.processing_stopped_at is not None


def test_an_admin_lift_records_who_and_why_and_tells_the_contact_in_the_same_commit():
    person = PersonFactory()
    stop(person)
    admin = AdminUserFactory()
    resumed = rights.processing_resume(person=person, source="staff", actor=admin,
                                       reason="Dispute settled, see ticket 42")
    assert resumed.processing_stopped_at is None
    request = RightsRequest.objects.get(person_ref=person.pk)
    assert (request.lifted_by, request.lift_reason) == (admin, "Dispute settled, see ticket 42")
    told = EmailMessage.objects.get(person=person, template="processing_resumed")
    assert told.kind == MailKind.SYSTEM and told.to_address == person.email


def test_the_contact_is_told_before_the_lift_commits(monkeypatch):
    """If telling the contact fails, the record stays stopped (one transaction)."""
    person = PersonFactory()
    stop(person)

    def broken(person_id):
        raise RuntimeError("mail layer down")

    monkeypatch.setitem(extensions.rights_notifiers, "processing_resumed", broken)
    with pytest.raises(RuntimeError):
        rights.processing_resume(person=person, source="portal")
    person.refresh_from_db()
    assert person.processing_stopped_at is not None


def test_the_notice_is_written_while_the_record_is_still_stopped(monkeypatch):
    person = PersonFactory()
    stop(person)
    seen = []
    real = extensions.rights_notifiers["processing_resumed"]

    def spy(person_id):
        seen.append(Person.objects.get(pk=person_id).processing_stopped_at is not None)
        real(person_id)
        seen.append(EmailMessage.objects.filter(person_id=person_id, kind="system").exists())

    monkeypatch.setitem(extensions.rights_notifiers, "processing_resumed", spy)
    rights.processing_resume(person=person, source="portal")
    assert seen == [True, True]


def test_import_skips_a_stopped_record():
    person = PersonFactory(email="stopped@example.org", first_name="Old")
    stop(person)
    job = import_people("first_name,email\nNew,stopped@example.org\n")
    assert (job.stopped_count, job.created_count) == (1, 0)
    person.refresh_from_db()
    assert person.first_name == "Old"


# -- erasure --------------------------------------------------------------------------------------

def test_erasure_request_flags_the_record_and_opens_a_request():
    person = PersonFactory()
    request = rights.erasure_request(person=person, source="portal")
    person.refresh_from_db()
    assert person.erasure_requested_at is not None
    assert (request.kind, request.state) == ("erasure", "open")
    assert list(Person.objects.filter(erasure_requested_at__isnull=False)) == [person]


def test_erase_leaves_a_tombstone_suppresses_the_address_and_closes_the_request():
    person = PersonFactory(email="gone@example.org")
    version = person.portal_key_version
    rights.erasure_request(person=person, source="portal")
    admin = AdminUserFactory()
    erased = rights.person_erase(person=person, source="staff", actor=admin)
    assert erased.erased_at is not None and erased.email == "" and erased.first_name == ""
    assert erased.portal_key_version == version + 1
    from crm.models import SuppressedAddress

    assert SuppressedAddress.objects.filter(
        address_hash=services.address_hash("gone@example.org")).exists()
    request = RightsRequest.objects.get(person_ref=person.pk)
    assert (request.state, request.handled_by) == ("done", admin)


def test_erase_works_on_a_stopped_record():
    person = PersonFactory()
    stop(person)
    assert rights.person_erase(person=person, source="staff").erased_at is not None


# -- export ---------------------------------------------------------------------------------------

def test_export_holds_every_section_and_decrypts_for_the_contact():
    person = PersonFactory(national_id="AB123456", card_number="4111 1111 1111 1111")
    data = rights.person_export(person=person)
    assert data["person"]["national_id"] == "AB123456"
    assert data["person"]["card_number"] == "4111111111111111"
    assert data["person"]["email"] == person.email
    assert {"consents", "email", "history", "rights_requests"} <= set(data)


def test_export_tells_an_imported_person_their_data_came_from_an_import_not_which_file():
    staff = StaffUserFactory(username="sam.staff")
    import_people("first_name,email\nAda,ada@example.org\n", user=staff,
                  file_name="leads-from-fair.csv")
    person = Person.objects.get(email="ada@example.org")
    services.person_update(person=person, data={"first_name": "Augusta"}, actor=staff,
                           source=services.Source.STAFF)

    data = rights.person_export(person=person)

    assert [(step["action"], step["via"]) for step in data["history"]] == [
        ("create", "import"), ("update", "staff")]
    assert data["history"][0]["fields"] == ["email", "first_name"]
    text = repr(data)
    assert "import_job" not in data["person"]
    assert "leads-from-fair" not in text and "sam.staff" not in text


def test_export_tells_when_a_sensitive_value_was_revealed_by_role_not_by_name(settings):
    from crm.models import FieldDefinition
    from crm.reveal import person_reveal

    admin = AdminUserFactory(username="ada.admin")
    FieldDefinition.objects.get(key="card_number").reveal_groups.add(*admin.groups.all())
    person = PersonFactory(card_number="4111 1111 1111 1111")
    person_reveal(person=person, field_key="card_number", user=admin, reason="ticket 9",
                  ip="10.0.0.1")
    reveals = rights.person_export(person=person)["sensitive_field_reveals"]
    assert [(r["field"], r["role"]) for r in reveals] == [("card_number", "Admins")]
    assert "ada.admin" not in str(reveals)


def test_export_csv_neutralises_formulas():
    person = PersonFactory(first_name="=HYPERLINK(\"http://evil\")")
    text = rights.person_export_csv(person=person)
    assert "'=HYPERLINK" in text
    assert text.splitlines()[0].lstrip("\ufeff") == "section,field,value"


def test_rights_permissions_are_admins_only():
    admin, staff = AdminUserFactory(), StaffUserFactory()
    assert not ADMIN_ONLY_PERMISSIONS & STAFF_PERMISSIONS
    for perm in ADMIN_ONLY_PERMISSIONS:
        assert admin.has_perm(perm)
        assert not staff.has_perm(perm)
    assert Permission.objects.filter(codename="lift_processing_stop").exists()


# -- API ------------------------------------------------------------------------------------------

def url(person, name):
    return f"/api/persons/{person.pk}/{name}/"


def test_api_erase_answers_the_tombstone(admin_api):
    person = PersonFactory(first_name="Ada", national_id="AB123456")
    response = admin_api.post(url(person, "erase"))
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["erased_at"] and body["first_name"] == "" and body["email"] == ""
    assert body["national_id"] in ("", None)


def test_api_erase_is_refused_to_staff_and_unknown_ids_are_404(staff_api, admin_api):
    person = PersonFactory()
    assert staff_api.post(url(person, "erase")).status_code == 403
    person.refresh_from_db()
    assert person.erased_at is None
    missing = "/api/persons/00000000-0000-4000-8000-000000000000/erase/"
    assert admin_api.post(missing).status_code == 404
    assert admin_api.post("/api/persons/not-a-uuid/erase/").status_code == 404


def test_api_stop_then_every_write_answers_423(staff_api):
    person = PersonFactory()
    response = staff_api.post(url(person, "processing-stop"), {"note": "by letter"},
                              format="json")
    assert response.status_code == 200
    assert response.json()["processing_stopped_at"]
    patch = staff_api.patch(f"/api/persons/{person.pk}/", {"first_name": "X"}, format="json")
    assert patch.status_code == 423
    assert staff_api.post(url(person, "convert")).status_code == 423


def test_api_resume_needs_the_permission_then_a_reason(staff_api, admin_api):
    person = PersonFactory()
    stop(person)
    assert staff_api.post(url(person, "processing-resume"), {"reason": "ok"},
                          format="json").status_code == 403
    missing = admin_api.post(url(person, "processing-resume"), {}, format="json")
    assert missing.status_code == 400 and "reason" in missing.json()
    blank = admin_api.post(url(person, "processing-resume"), {"reason": "  "}, format="json")
    assert blank.status_code == 400 and "reason" in blank.json()
    person.refresh_from_db()
    assert person.processing_stopped_at is not None
    done = admin_api.post(url(person, "processing-resume"), {"reason": "Ticket 7 closed"},
                          format="json")
    assert done.status_code == 200 and done.json()["processing_stopped_at"] is None
    assert EmailMessage.objects.filter(person=person, kind="system").exists()


def test_api_erasure_request_sets_the_filterable_flag(staff_api):
    person, other = PersonFactory(), PersonFactory()
    assert staff_api.post(url(person, "erasure-request")).status_code == 200
    listed = staff_api.get("/api/persons/", {"erasure_requested": "true"}).json()
    ids = [p["id"] for p in listed["results"]] if "results" in listed else [p["id"] for p in listed]
    assert ids == [str(person.pk)] and str(other.pk) not in ids


def test_api_delete_record_forgets_the_mail_log_too(admin_api):
    person = PersonFactory(email="bye@example.org")
    from campaigns.emails import enqueue

    enqueue(person=person, kind="adhoc", template="adhoc",
            context={"subject": "Hi", "body": "Hello bye"}, idempotency_key="t:1")
    assert admin_api.delete(f"/api/persons/{person.pk}/").status_code == 204
    assert not Person.objects.filter(pk=person.pk).exists()
    assert not EmailMessage.objects.filter(to_address="bye@example.org").exists()


def test_an_erased_tombstone_refuses_new_personal_data(admin_api):
    person = PersonFactory()
    rights.person_erase(person=person, source="staff")
    response = admin_api.patch(f"/api/persons/{person.pk}/", {"first_name": "Back"},
                               format="json")
    assert response.status_code == 409 and response.json()["code"] == "erased"


# -- staff admin ----------------------------------------------------------------------------------

def admin_url(name, person):
    return reverse(f"admin:crm_person_{name}", args=[person.pk])


@pytest.fixture
def staff_browser(staff_user):
    """A second browser, for tests that also use `admin_client_` (which shares `client`)."""
    from django.test import Client

    browser = Client()
    browser.force_login(staff_user)
    return browser


def test_stopped_record_page_is_read_only_with_banner_and_offers_the_lift_to_admins(
        admin_client_, staff_browser):
    person = PersonFactory()
    stop(person)
    page = admin_client_.get(admin_url("change", person))
    assert b"Processing stopped" in page.content and b'name="_save"' not in page.content
    assert admin_url("lift", person).encode() in page.content
    staff_page = staff_browser.get(admin_url("change", person))
    assert admin_url("lift", person).encode() not in staff_page.content
    assert staff_browser.post(admin_url("change", person), {"first_name": "X"}).status_code == 403


def test_staff_stop_processing_from_the_person_page(staff_client):
    person = PersonFactory()
    assert staff_client.get(admin_url("stop", person)).status_code == 200
    response = staff_client.post(admin_url("stop", person), {"note": "asked by phone"})
    assert response.status_code == 302
    person.refresh_from_db()
    assert person.processing_stopped_at is not None
    assert RightsRequest.objects.get(person_ref=person.pk).handled_by.username == "sam.staff"


def test_admin_lift_needs_the_permission_and_a_reason(admin_client_, staff_browser):
    person = PersonFactory()
    stop(person)
    assert staff_browser.get(admin_url("lift", person)).status_code == 403
    assert staff_browser.post(admin_url("lift", person), {"reason": "x"}).status_code == 403
    empty = admin_client_.post(admin_url("lift", person), {"reason": ""})
    assert empty.status_code == 200 and empty.context["form"].errors["reason"]
    person.refresh_from_db()
    assert person.processing_stopped_at is not None
    done = admin_client_.post(admin_url("lift", person), {"reason": "Complaint withdrawn"})
    assert done.status_code == 302
    person.refresh_from_db()
    assert person.processing_stopped_at is None
    assert EmailMessage.objects.filter(person=person, kind="system").exists()


def test_erase_confirmation_lists_what_is_cleared_and_needs_the_permission(
        admin_client_, staff_browser):
    person = PersonFactory(first_name="Vanishing")
    assert staff_browser.get(admin_url("erase", person)).status_code == 403
    page = admin_client_.get(admin_url("erase", person))
    assert page.status_code == 200
    for label in (b"First name", b"Email", b"Phone", b"National ID", b"Card number"):
        assert label in page.content
    unconfirmed = admin_client_.post(admin_url("erase", person), {})
    assert unconfirmed.status_code == 200
    person.refresh_from_db()
    assert person.erased_at is None
    assert admin_client_.post(admin_url("erase", person), {"confirm": "on"}).status_code == 302
    person.refresh_from_db()
    assert person.erased_at is not None and person.first_name == ""
    tombstone = admin_client_.get(admin_url("change", person))
    assert b"tombstone" in tombstone.content and b'name="_save"' not in tombstone.content


def test_staff_records_an_erasure_request_and_the_filter_finds_it(staff_client):
    person, other = PersonFactory(), PersonFactory()
    assert staff_client.post(admin_url("erasure_request", person), {"note": ""}).status_code == 302
    listing = staff_client.get(reverse("admin:crm_person_changelist"),
                               {"erasure_requested": "yes"})
    shown = list(listing.context["cl"].result_list)
    assert shown == [Person.objects.get(pk=person.pk)] and other not in shown


def test_changelist_actions_stop_lift_and_erase_a_selection(admin_client_):
    people = PersonFactory.create_batch(2)
    ids = [str(p.pk) for p in people]
    changelist = reverse("admin:crm_person_changelist")
    confirm = admin_client_.post(changelist, {"action": "stop_processing",
                                              "_selected_action": ids})
    assert confirm.status_code == 200
    admin_client_.post(changelist, {"action": "stop_processing", "_selected_action": ids,
                                    "apply": "1", "note": ""})
    assert Person.objects.filter(pk__in=ids, processing_stopped_at__isnull=False).count() == 2
    admin_client_.post(changelist, {"action": "lift_processing_stop", "_selected_action": ids,
                                    "apply": "1", "reason": "Mistaken request"})
    assert Person.objects.filter(pk__in=ids, processing_stopped_at__isnull=True).count() == 2
    page = admin_client_.post(changelist, {"action": "erase_personal_data",
                                           "_selected_action": ids})
    assert b"What will be cleared" in page.content
    admin_client_.post(changelist, {"action": "erase_personal_data", "_selected_action": ids,
                                    "apply": "1", "confirm": "on"})
    assert Person.objects.filter(pk__in=ids, erased_at__isnull=False).count() == 2


def test_staff_do_not_see_the_lift_and_erase_actions(staff_client):
    PersonFactory()
    page = staff_client.get(reverse("admin:crm_person_changelist"))
    actions = dict(page.context["action_form"].fields["action"].choices)
    assert "stop_processing" in actions
    assert "lift_processing_stop" not in actions and "erase_personal_data" not in actions


def test_admin_delete_record_runs_the_erasers(admin_client_):
    person = PersonFactory(email="deleted@example.org", first_name="Ephemera")
    from django.contrib.admin.models import LogEntry

    from campaigns.emails import enqueue

    enqueue(person=person, kind="adhoc", template="adhoc",
            context={"subject": "Hi", "body": "Hello"}, idempotency_key="t:del")
    response = admin_client_.post(admin_url("delete", person), {"post": "yes"})
    assert response.status_code == 302
    assert not Person.objects.filter(pk=person.pk).exists()
    assert not EmailMessage.objects.filter(to_address="deleted@example.org").exists()
    # Django's own history of the deletion keeps the id, not the name.
    assert LogEntry.objects.filter(object_id=str(person.pk)).exists()
    assert not LogEntry.objects.filter(object_repr__contains="Ephemera").exists()


# -- the register in the admin --------------------------------------------------------------------

def test_register_lists_deadlines_highlights_overdue_and_is_admins_only(admin_client_,
                                                                        staff_browser):
    person = PersonFactory()
    with clock.frozen(datetime(2026, 1, 10, 9, 0, tzinfo=UTC)):
        rights.rights_request_record(person=person, kind="access", source="portal")
    with clock.frozen(datetime(2026, 3, 1, 9, 0, tzinfo=UTC)):
        page = admin_client_.get(reverse("admin:crm_rightsrequest_changelist"))
        overdue = admin_client_.get(reverse("admin:crm_rightsrequest_changelist"),
                                    {"deadline": "overdue"})
    assert b"2026-02-10" in page.content and b"overdue" in page.content
    assert len(overdue.context["cl"].result_list) == 1
    # A later, already handled request lists below the open one: the register is a work queue.
    with clock.frozen(datetime(2026, 2, 1, 9, 0, tzinfo=UTC)):
        stop(PersonFactory())
    rows = admin_client_.get(reverse("admin:crm_rightsrequest_changelist")).context["cl"]
    assert [r.state for r in rows.result_list] == ["open", "done"]
    assert staff_browser.get(reverse("admin:crm_rightsrequest_changelist")).status_code == 403


def test_admin_records_a_request_by_hand_and_closes_it(admin_client_, admin_user_):
    person = PersonFactory()
    assert admin_client_.get(reverse("admin:crm_rightsrequest_add")).status_code == 200
    added = admin_client_.post(reverse("admin:crm_rightsrequest_add"), {
        "person": str(person.pk), "kind": "access", "note": "Letter of 3 March"})
    assert added.status_code == 302, added.content
    request = RightsRequest.objects.get(person_ref=person.pk)
    assert (request.kind, request.state, request.source) == ("access", "open", "staff")
    change = reverse("admin:crm_rightsrequest_change", args=[request.pk])
    assert b"Close the request" in admin_client_.get(change).content
    closed = admin_client_.post(reverse("admin:crm_rightsrequest_change", args=[request.pk]),
                                {"close_as": "done", "close_note": "Export sent"})
    assert closed.status_code == 302
    request.refresh_from_db()
    assert (request.state, request.handled_by) == ("done", admin_user_)


@pytest.mark.parametrize(("kind", "flag"), [("erasure", "erasure_requested_at"),
                                            ("restriction", "processing_stopped_at"),
                                            ("access", None)])
def test_a_request_recorded_in_the_register_is_applied_on_receipt(kind, flag):
    person = PersonFactory()
    request = rights.rights_request_record(person=person, kind=kind, source="staff",
                                           note="Letter")
    person.refresh_from_db()
    assert request.kind == kind
    for name in ("erasure_requested_at", "processing_stopped_at"):
        assert (getattr(person, name) is not None) == (name == flag)


def test_erase_takes_the_tombstone_off_every_marketing_list():
    from tests.factories import MarketingListFactory

    person = PersonFactory()
    services.marketing_list_add(marketing_list=MarketingListFactory(), person_ids=[person.pk],
                                source="staff")
    rights.person_erase(person=person, source="staff")
    assert not person.marketing_lists.exists()
    assert "marketing_lists" in AuditEntry.objects.get(person_id=person.pk, action="erase").fields
