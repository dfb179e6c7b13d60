import uuid

import pytest
from rest_framework.test import APIClient

from config import clock
from crm.models import AuditEntry, FieldType, Person
from tests.factories import FieldDefinitionFactory, PersonFactory, StaffUserFactory

pytestmark = pytest.mark.django_db
URL = "/api/persons/"


def detail(person):
    return f"{URL}{person.pk}/"


def test_anonymous_and_tokenless_requests_are_refused():
    assert APIClient().get(URL).status_code == 401
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert bad.get(URL).status_code == 401


def test_user_without_role_gets_403(db):
    from tests.conftest import _api
    from tests.factories import UserFactory

    assert _api(UserFactory()).get(URL).status_code == 403


def test_staff_creates_a_person_and_the_write_is_audited(staff_api, staff_user):
    FieldDefinitionFactory(key="budget", field_type=FieldType.NUMBER)
    response = staff_api.post(URL, {
        "first_name": "Grace", "last_name": "Hopper", "email": "Grace@Navy.example",
        "kind": "contact", "country": "us", "region": "NA", "custom": {"budget": "1200"},
        "owner": staff_user.pk,
    }, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["email"] == "grace@navy.example"
    assert body["country"] == "US"
    assert body["custom"] == {"budget": 1200}
    assert body["owner"] == staff_user.pk
    entry = AuditEntry.objects.get(person_id=body["id"])
    assert (entry.actor, entry.source) == (staff_user, "api")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"email": "nope"}, "email"),
        ({"stage": "won"}, "stage"),
        ({"kind": "prospect"}, "kind"),
        ({"email_opt_in": "double_opt_in"}, "email_opt_in"),
        ({"custom": {"budget": "lots"}}, "custom.budget"),
        ({"custom": {"unknown": 1}}, "custom.unknown"),
        ({"custom": "not an object"}, "custom"),
        ({"owner": "abc"}, "owner"),
        ({"owner": 10**9}, "owner"),
        ({"organisation": 10**9}, "organisation"),
        ({"first_name": ["a"]}, "first_name"),
        ({"country": "Italy"}, "country"),
    ],
)
def test_bad_input_gets_400_naming_the_field(staff_api, payload, field):
    FieldDefinitionFactory(key="budget", field_type=FieldType.NUMBER)
    response = staff_api.post(URL, payload, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert not Person.objects.exists()


@pytest.mark.parametrize(
    "body",
    ["{not json", "[1, 2]", '"string"', "null", "\x00\x01"],
)
def test_malformed_bodies_get_400_not_500(staff_api, body):
    response = staff_api.generic("POST", URL, body, content_type="application/json")
    assert response.status_code == 400


def test_duplicate_email_gets_400(staff_api):
    PersonFactory(email="one@example.org")
    response = staff_api.post(URL, {"email": "ONE@example.org"}, format="json")
    assert response.status_code == 400
    assert "email" in response.json()


def test_update_and_partial_update(staff_api):
    person = PersonFactory(first_name="Old")
    response = staff_api.patch(detail(person), {"first_name": "New"}, format="json")
    assert response.status_code == 200
    assert response.json()["first_name"] == "New"
    response = staff_api.put(detail(person), {"first_name": "Newer", "stage": "qualified"},
                             format="json")
    assert response.status_code == 200
    assert Person.objects.get(pk=person.pk).stage == "qualified"


def test_read_only_fields_cannot_be_written_through_the_api(staff_api):
    person = PersonFactory()
    staff_api.patch(detail(person), {"processing_stopped_at": "2026-01-01T00:00:00Z",
                                     "locked_fields": ["email"]}, format="json")
    person.refresh_from_db()
    assert person.processing_stopped_at is None and person.locked_fields == []


def test_changing_kind_or_opt_in_by_patch_is_refused(staff_api):
    person = PersonFactory(kind="lead")
    assert staff_api.patch(detail(person), {"kind": "contact"}, format="json").status_code == 400
    # Sending back the unchanged value (a GET-modify-PUT client) is fine.
    assert staff_api.patch(detail(person), {"kind": "lead"}, format="json").status_code == 200


def test_write_to_a_stopped_record_gets_423(staff_api):
    person = PersonFactory()
    Person.objects.filter(pk=person.pk).update(processing_stopped_at=clock.now())
    response = staff_api.patch(detail(person), {"first_name": "X"}, format="json")
    assert response.status_code == 423
    assert response.json()["code"] == "processing_stopped"


def test_locked_field_gets_400_naming_the_field(staff_api):
    person = PersonFactory()
    Person.objects.filter(pk=person.pk).update(locked_fields=["phone"])
    response = staff_api.patch(detail(person), {"phone": "123"}, format="json")
    assert response.status_code == 400
    assert "phone" in response.json()


@pytest.mark.parametrize("pk", [uuid.uuid4(), "not-a-uuid", "1", "../admin"])
def test_unknown_or_malformed_id_gets_404(staff_api, pk):
    assert staff_api.get(f"{URL}{pk}/").status_code == 404
    assert staff_api.patch(f"{URL}{pk}/", {"first_name": "x"}, format="json").status_code == 404


def test_staff_cannot_delete_but_admin_can(staff_api, admin_api):
    person = PersonFactory()
    assert staff_api.delete(detail(person)).status_code == 403
    assert admin_api.delete(detail(person)).status_code == 204
    assert not Person.objects.filter(pk=person.pk).exists()


def test_convert_action_turns_a_lead_into_a_contact(staff_api):
    lead = PersonFactory(kind="lead")
    response = staff_api.post(f"{detail(lead)}convert/")
    assert response.status_code == 200
    assert response.json()["kind"] == "contact"
    assert response.json()["id"] == str(lead.pk)


def _ids(response):
    assert response.status_code == 200, response.content
    return {row["id"] for row in response.json()["results"]}


def test_list_filters(staff_api, staff_user):
    stopped = PersonFactory(kind="contact", region="EU", stage="customer")
    Person.objects.filter(pk=stopped.pk).update(processing_stopped_at=clock.now())
    erasure = PersonFactory(kind="lead", region="UK", email_opt_in="single_opt_in_user")
    Person.objects.filter(pk=erasure.pk).update(erasure_requested_at=clock.now())
    owned = PersonFactory(kind="lead", region="NA", owner=staff_user, company="Zyxel Ltd",
                          email="Owned@Example.org")
    cases = {
        "kind=contact": {stopped},
        "kind=lead": {erasure, owned},
        "region=UK": {erasure},
        "stage=customer": {stopped},
        f"owner={staff_user.pk}": {owned},
        "owner=none": {stopped, erasure},
        "email=OWNED@example.org": {owned},
        "email_opt_in=single_opt_in_user": {erasure},
        "email_opt_in=none,single_opt_in_user": {stopped, erasure, owned},
        "processing_stopped=true": {stopped},
        "processing_stopped=false": {erasure, owned},
        "erasure_requested=true": {erasure},
        "search=zyxel": {owned},
        "kind=lead&region=NA": {owned},
    }
    for query, expected in cases.items():
        assert _ids(staff_api.get(f"{URL}?{query}")) == {str(p.pk) for p in expected}, query


@pytest.mark.parametrize(
    "query",
    ["kind=x", "stage=won", "region=Mars", "owner=abc", "email_opt_in=maybe",
     "email_opt_in=none,bogus", "processing_stopped=perhaps", "erasure_requested=2"],
)
def test_bad_filter_values_get_400(staff_api, query):
    response = staff_api.get(f"{URL}?{query}")
    assert response.status_code == 400
    assert query.split("=")[0] in response.json()


def test_list_query_count_does_not_grow_with_rows(staff_api, django_assert_max_num_queries):
    PersonFactory.create_batch(60, owner=StaffUserFactory())
    with django_assert_max_num_queries(6):
        assert staff_api.get(URL).status_code == 200


def test_schema_and_docs_list_the_person_endpoints(admin_client_):
    schema = admin_client_.get("/api/schema/")
    assert schema.status_code == 200
    text = schema.content.decode()
    assert "/api/persons/" in text and "/api/persons/{id}/" in text
    assert "email_opt_in" in text
    docs = admin_client_.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger-ui" in docs.content


def test_schema_is_not_public(client):
    assert client.get("/api/schema/").status_code in (401, 403)


def test_sensitive_fields_are_written_in_full_and_read_masked(staff_api):
    response = staff_api.post(URL, {"email": "s@example.org", "card_number": "4111 1111 1111 1111",
                                    "national_id": "AB123456"}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["card_number"] == "••••••••••••1111"
    assert body["national_id"] == "••••3456"
    assert "4111111111111111" not in response.content.decode()
    # Sending the mask back (GET-modify-PUT) is refused instead of overwriting the value.
    echo = staff_api.patch(f"{URL}{body['id']}/", {"card_number": body["card_number"]},
                           format="json")
    assert echo.status_code == 400 and "card_number" in echo.json()


@pytest.mark.parametrize(("field", "value"), [
    ("card_number", "4111111111111112"), ("national_id", "!!"), ("card_number", 42),
    # Digits of other scripts are digits to str.isdigit, not to a card number (nor a 500).
    ("card_number", "４１１１１１１１１１１１１１１１"), ("card_number", "4111²111111111111"),
])
def test_bad_sensitive_values_get_400(staff_api, field, value):
    response = staff_api.post(URL, {field: value}, format="json")
    assert response.status_code == 400 and field in response.json()


@pytest.mark.parametrize("url", ["/api/persons/", "/api/persons/export/"])
def test_a_null_character_in_a_filter_is_a_400_naming_it(staff_api, url):
    response = staff_api.get(url, {"search": "abc\x00def", "stage": "new"})
    assert response.status_code == 400
    assert list(response.json()) == ["search"]


@pytest.mark.parametrize("url", ["/admin/crm/person/?stage=new%00", "/admin/crm/person/?q=a%00b"])
def test_a_null_character_in_an_admin_list_filter_is_a_400_not_a_500(admin_client_, url):
    assert admin_client_.get(url).status_code == 400


def test_person_filter_refuses_a_null_character_for_any_caller():
    from django.core.exceptions import ValidationError

    from crm.selectors import person_filter

    with pytest.raises(ValidationError) as refused:
        person_filter({"search": "a\x00b"})
    assert list(refused.value.message_dict) == ["search"]
