import csv
import io

import pytest
from django.contrib import admin as django_admin
from django.http import StreamingHttpResponse
from django.urls import reverse
from rest_framework.test import APIClient

from config import clock
from crm import exports
from crm.models import FieldType, Person
from tests.factories import FieldDefinitionFactory, PersonFactory, UserFactory

pytestmark = pytest.mark.django_db
URL = "/api/persons/export/"
VISA = "4111111111111111"


def rows_of(response) -> list[dict]:
    assert isinstance(response, StreamingHttpResponse)
    text = b"".join(response.streaming_content).decode("utf-8-sig")
    return list(csv.DictReader(io.StringIO(text)))


def refuse_decryption(monkeypatch):
    """From here on, any attempt to open a sealed value (or unwrap a data key) fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("an export decrypted a value")

    monkeypatch.setattr("encryption.cipher.open_sealed", refuse)
    monkeypatch.setattr("encryption.values.open_sealed", refuse)
    monkeypatch.setattr("encryption.datakeys.open_sealed", refuse)


@pytest.mark.parametrize(("value", "cell"), [
    ("=1+1", "'=1+1"),
    ("+cmd", "'+cmd"),
    ("-2", "'-2"),
    ("@SUM(A1)", "'@SUM(A1)"),
    ("\tx", "'\tx"),
    ("\rx", "'\rx"),
    ("plain", "plain"),
    ("a=b", "a=b"),
    ("", ""),
    (None, ""),
    (True, "true"),
    (12, "12"),
])
def test_cells_a_spreadsheet_would_run_as_formulas_get_a_leading_quote(value, cell):
    assert exports.neutralise(value) == cell


def test_export_masks_sensitive_values_neutralises_formulas_and_decrypts_nothing(
        staff_api, monkeypatch):
    FieldDefinitionFactory(key="tax_code", is_encrypted=True, mask_rule="last:3")
    FieldDefinitionFactory(key="motto")
    FieldDefinitionFactory(key="vip", field_type=FieldType.BOOLEAN)
    PersonFactory(email="ada@example.org", first_name="=1+1", last_name="+cmd", company="-2",
                  phone="@SUM(A1)", national_id="AB123456", card_number=VISA,
                  custom={"tax_code": "TAXCODE987", "motto": "=HYPERLINK(\"x\")", "vip": "yes"})
    refuse_decryption(monkeypatch)
    response = staff_api.get(URL)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    [row] = rows_of(response)
    assert (row["first_name"], row["last_name"], row["company"], row["phone"]) == (
        "'=1+1", "'+cmd", "'-2", "'@SUM(A1)")
    assert row["national_id"] == "••••3456"
    assert row["card_number"] == "••••••••••••1111"
    assert row["tax_code"] == "•••••••987"
    assert row["motto"] == "'=HYPERLINK(\"x\")"
    assert row["vip"] == "true"
    text = str(row)
    for plain in ("AB123456", VISA, "TAXCODE987"):
        assert plain not in text


def test_export_takes_the_list_filters(staff_api):
    PersonFactory(email="lead@example.org", kind="lead", region="EU")
    PersonFactory(email="contact@example.org", kind="contact", region="UK")
    assert [r["email"] for r in rows_of(staff_api.get(URL, {"kind": "contact"}))] == [
        "contact@example.org"]
    assert [r["email"] for r in rows_of(staff_api.get(URL, {"search": "lead@"}))] == [
        "lead@example.org"]
    assert len(rows_of(staff_api.get(URL))) == 2
    assert staff_api.get(URL, {"kind": "prospect"}).status_code == 400
    assert staff_api.get(URL, {"kind": "prospect"}, HTTP_ACCEPT="text/csv").status_code == 400


def test_export_leaves_out_people_whose_processing_is_stopped(staff_api):
    PersonFactory(email="kept@example.org")
    stopped = PersonFactory(email="stopped@example.org")
    Person.objects.filter(pk=stopped.pk).update(processing_stopped_at=clock.now())
    assert [r["email"] for r in rows_of(staff_api.get(URL))] == ["kept@example.org"]


def test_export_can_be_read_back_by_the_import_mapping():
    from crm import imports

    header = next(exports.person_rows(Person.objects.none()))
    mapping = imports.default_mapping(header, imports.importable_fields())
    assert set(mapping.values()) == set(imports.CORE_FIELDS)


def test_export_needs_a_token_and_the_view_permission():
    from tests.conftest import _api

    assert APIClient().get(URL).status_code == 401
    assert _api(UserFactory()).get(URL).status_code == 403


def test_export_streams_in_bounded_queries(staff_api, django_assert_max_num_queries):
    for i in range(30):
        PersonFactory(email=f"p{i}@example.org")
    response = staff_api.get(URL)
    with django_assert_max_num_queries(4):
        assert len(rows_of(response)) == 30


@pytest.mark.parametrize(("list_name", "kind"), [
    ("person", "contact"), ("lead", "lead"), ("contact", "contact")])
def test_staff_export_selected_people_from_each_list(staff_client, monkeypatch, list_name, kind):
    person = PersonFactory(email="ada@example.org", kind=kind, card_number=VISA,
                           first_name="=cmd")
    PersonFactory(email="other@example.org", kind=kind)
    refuse_decryption(monkeypatch)
    response = staff_client.post(reverse(f"admin:crm_{list_name}_changelist"), {
        "action": "export_csv", django_admin.helpers.ACTION_CHECKBOX_NAME: [str(person.pk)],
    })
    assert response.status_code == 200
    [row] = rows_of(response)
    assert (row["email"], row["first_name"], row["card_number"]) == (
        "ada@example.org", "'=cmd", "••••••••••••1111")
