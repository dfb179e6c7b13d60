import uuid

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from consents import services as consent_services
from consents.models import PurposeKind, Segment, Source, Verification
from crm import rights, services
from crm.models import AuditEntry, ListMembership
from tests.conftest import _api
from tests.factories import MarketingListFactory, PersonFactory, UserFactory

pytestmark = pytest.mark.django_db
URL = "/api/marketing-lists/"


def members_url(marketing_list):
    return f"{URL}{marketing_list.pk}/members/"


def member_ids(marketing_list):
    return set(ListMembership.objects.filter(marketing_list=marketing_list)
               .values_list("person_id", flat=True))


def csv_file(text):
    return SimpleUploadedFile("members.csv", text.encode(), content_type="text/csv")


@pytest.fixture
def news():
    return consent_services.purpose_create(key="news", name="News", kind=PurposeKind.CUSTOM,
                                           title="Newsletter", text="Monthly news.")


def grant(person, purpose):
    consent_services.consent_grant(person=person, purpose=purpose, source=Source.PORTAL,
                                   verified_by=Verification.EMAIL_CONFIRMATION)


def stopped_person(**data):
    person = PersonFactory(**data)
    return rights.processing_stop(person=person, source=services.Source.STAFF)


def erased_person(**data):
    person = PersonFactory(**data)
    return rights.person_erase(person=person, source=services.Source.STAFF)


# -- the lists ------------------------------------------------------------------------------------

def test_admin_creates_renames_and_deletes_a_list_and_sees_its_member_count(admin_api):
    created = admin_api.post(URL, {"name": "Newsletter", "description": "Monthly"},
                             format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["member_count"] == 0
    list_id = created.json()["id"]
    admin_api.post(f"{URL}{list_id}/members/",
                   {"persons": [str(p.pk) for p in PersonFactory.create_batch(2)]},
                   format="json")
    renamed = admin_api.patch(f"{URL}{list_id}/", {"name": "News"}, format="json")
    assert renamed.status_code == 200
    assert (renamed.json()["name"], renamed.json()["member_count"]) == ("News", 2)
    assert admin_api.get(URL).json()["results"][0]["member_count"] == 2
    assert admin_api.delete(f"{URL}{list_id}/").status_code == 204
    assert not ListMembership.objects.exists()


def test_a_duplicate_list_name_is_a_400_naming_the_field(admin_api):
    MarketingListFactory(name="Newsletter")
    response = admin_api.post(URL, {"name": "Newsletter"}, format="json")
    assert response.status_code == 400
    assert "name" in response.json()


def test_staff_may_not_delete_a_list(staff_api):
    marketing_list = MarketingListFactory()
    assert staff_api.delete(f"{URL}{marketing_list.pk}/").status_code == 403


@pytest.mark.parametrize(("method", "path", "body"), [
    ("get", "", None),
    ("post", "", {"name": "Mine"}),
    ("patch", "{id}/", {"name": "Mine"}),
    ("delete", "{id}/", None),
    ("get", "{id}/members/", None),
    ("post", "{id}/members/", {"persons": []}),
    ("delete", "{id}/members/", {"persons": []}),
])
def test_a_user_without_a_role_gets_403_on_lists_and_members(method, path, body):
    marketing_list = MarketingListFactory()
    no_role = _api(UserFactory())
    response = getattr(no_role, method)(URL + path.format(id=marketing_list.pk), body,
                                        format="json")
    assert response.status_code == 403


def test_members_need_the_membership_permissions_not_just_the_list_ones():
    from django.contrib.auth.models import Permission

    user = UserFactory()
    user.user_permissions.add(*Permission.objects.filter(codename__in=[
        "view_marketinglist", "change_marketinglist", "view_person"]))
    marketing_list = MarketingListFactory()
    api = _api(user)
    assert api.get(f"{URL}{marketing_list.pk}/").status_code == 200
    assert api.get(members_url(marketing_list)).status_code == 403
    person = PersonFactory()
    assert api.post(members_url(marketing_list), {"persons": [str(person.pk)]},
                    format="json").status_code == 403


@pytest.mark.parametrize(("method", "path"), [
    ("get", "{id}/"), ("get", "{id}/members/"), ("post", "{id}/members/"),
    ("delete", "{id}/members/"), ("get", "not-a-number/members/"),
])
def test_an_unknown_list_is_404(staff_api, method, path):
    body = {"persons": [str(uuid.uuid4())]}
    response = getattr(staff_api, method)(URL + path.format(id=999_999), body, format="json")
    assert response.status_code == 404


# -- adding people ---------------------------------------------------------------------------------

def test_staff_add_people_by_id_and_adding_them_again_changes_nothing(staff_api, staff_user):
    marketing_list = MarketingListFactory()
    people = PersonFactory.create_batch(3)
    body = {"persons": [str(p.pk) for p in people]}
    first = staff_api.post(members_url(marketing_list), body, format="json")
    assert first.status_code == 200, first.json()
    assert first.json() == {"added": 3, "already": 0, "skipped_stopped": 0, "skipped_erased": 0,
                            "unknown": 0}
    again = staff_api.post(members_url(marketing_list), body, format="json")
    assert again.json() == {"added": 0, "already": 3, "skipped_stopped": 0, "skipped_erased": 0,
                            "unknown": 0}
    assert member_ids(marketing_list) == {p.pk for p in people}
    assert set(ListMembership.objects.values_list("source", flat=True)) == {"api"}
    audit = AuditEntry.objects.filter(action="list_add")
    assert audit.count() == 3  # one per person added, none for the repeat
    assert {(e.actor_id, e.source, tuple(e.fields)) for e in audit} == {
        (staff_user.pk, "api", ("marketing_lists",))}


def test_stopped_and_erased_people_and_unknown_ids_are_skipped_and_counted(staff_api):
    marketing_list = MarketingListFactory()
    ok = PersonFactory()
    stopped = stopped_person()
    erased = erased_person()
    response = staff_api.post(members_url(marketing_list), {"persons": [
        str(ok.pk), str(stopped.pk), str(erased.pk), str(uuid.uuid4()), str(ok.pk)]},
        format="json")
    assert response.json() == {"added": 1, "already": 0, "skipped_stopped": 1,
                               "skipped_erased": 1, "unknown": 1}
    assert member_ids(marketing_list) == {ok.pk}


def test_add_by_segment_adds_the_people_its_rule_selects(staff_api):
    marketing_list = MarketingListFactory()
    won = PersonFactory.create_batch(2, stage="customer")
    PersonFactory(stage="new")
    stopped_person(stage="customer")
    segment = consent_services.segment_save(segment=Segment(
        name="Won", rule={"field": "stage", "op": "eq", "value": "customer"}))
    response = staff_api.post(members_url(marketing_list), {"segment": segment.pk},
                              format="json")
    assert response.json() == {"added": 2, "already": 0, "skipped_stopped": 1,
                               "skipped_erased": 0, "unknown": 0}
    assert member_ids(marketing_list) == {p.pk for p in won}


def test_add_by_rule_with_a_consent_condition(staff_api, news):
    marketing_list = MarketingListFactory()
    eu_granted, us_granted, eu_unknown = (PersonFactory(region="EU"), PersonFactory(region="NA"),
                                          PersonFactory(region="EU"))
    grant(eu_granted, news)
    grant(us_granted, news)
    rule = {"all": [{"consent": "news", "state": "granted"},
                    {"field": "region", "op": "eq", "value": "EU"}]}
    response = staff_api.post(members_url(marketing_list), {"rule": rule}, format="json")
    assert response.json()["added"] == 1
    assert member_ids(marketing_list) == {eu_granted.pk}
    assert eu_unknown.pk not in member_ids(marketing_list)


def test_add_by_the_filters_of_the_person_list(staff_api, news):
    marketing_list = MarketingListFactory()
    wanted = PersonFactory(stage="customer")
    grant(wanted, news)
    grant(PersonFactory(stage="new"), news)
    PersonFactory(stage="customer")
    response = staff_api.post(members_url(marketing_list), {
        "filter": {"stage": "customer", "consent": "news:granted"}}, format="json")
    assert response.json()["added"] == 1
    assert member_ids(marketing_list) == {wanted.pk}


def test_a_segment_filters_the_person_list_too(staff_api):
    PersonFactory(stage="customer", email="winner@example.org")
    PersonFactory(stage="new")
    segment = consent_services.segment_save(segment=Segment(
        name="Won", rule={"field": "stage", "op": "eq", "value": "customer"}))
    listing = staff_api.get(f"/api/persons/?segment={segment.pk}").json()
    assert [p["email"] for p in listing["results"]] == ["winner@example.org"]


def test_csv_adds_the_good_rows_and_reports_the_others_by_line(staff_api):
    marketing_list = MarketingListFactory()
    ada = PersonFactory(email="ada@example.org")
    bob = PersonFactory(email="bob@example.org")
    stopped_person(email="stopped@example.org")
    text = ("name,Email\n"                    # line 1: the header (column names any case)
            "Ada, ADA@Example.org \n"         # 2: normalised, added
            "Nobody,nobody@example.org\n"     # 3: no such person
            "Broken,not-an-address\n"         # 4: malformed address
            'Quoted,"bob@example.org"\n'      # 5: added
            "Stopped,stopped@example.org\n"   # 6: skipped, counted
            "Again,ada@example.org\n"         # 7: already (same file)
            "Short\n")                        # 8: no email cell
    response = staff_api.post(members_url(marketing_list), {"file": csv_file(text)},
                              format="multipart")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert {k: body[k] for k in ("added", "already", "skipped_stopped", "unknown")} == {
        "added": 2, "already": 1, "skipped_stopped": 1, "unknown": 1}
    assert [(e["line"], e["reason"]) for e in body["errors"]] == [
        (3, "No person has this email."), (4, "Not a valid email address."),
        (8, "Not a valid email address.")]
    assert member_ids(marketing_list) == {ada.pk, bob.pk}
    assert set(ListMembership.objects.values_list("source", flat=True)) == {"api"}


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty"),
    ("name,phone\nAda,123\n", "email column"),
])
def test_a_csv_without_an_email_column_is_a_400_and_adds_no_one(staff_api, text, message):
    marketing_list = MarketingListFactory()
    response = staff_api.post(members_url(marketing_list), {"file": csv_file(text)},
                              format="multipart")
    assert response.status_code == 400
    assert message in response.json()["file"][0]


def test_a_file_that_is_not_utf8_adds_no_one(staff_api):
    marketing_list = MarketingListFactory()
    PersonFactory(email="ada@example.org")
    upload = SimpleUploadedFile("m.csv", "email\nada@example.org\nJosé\xff\n".encode("latin-1"))
    response = staff_api.post(members_url(marketing_list), {"file": upload}, format="multipart")
    assert response.status_code == 400 and "file" in response.json()
    assert not member_ids(marketing_list)


@pytest.mark.parametrize(("body", "field"), [
    ({"persons": ["not-a-uuid"]}, "persons"),
    ({"persons": []}, "persons"),
    ({"segment": 999_999}, "segment"),
    ({"segment": "abc"}, "segment"),
    ({"rule": {"field": "no_such_field", "op": "eq", "value": "x"}}, "rule"),
    ({"rule": {"consent": "no_such_purpose", "state": "granted"}}, "rule"),
    ({"rule": "not json {"}, "rule"),
    ({"filter": {"stage": "sold"}}, "stage"),
    ({"filter": {"stagee": "customer"}}, "filter"),
    ({"filter": {}}, "filter"),
    ({"filter": {"consent": "news"}}, "consent"),
    ({}, "non_field_errors"),
    ({"persons": [str(uuid.uuid4())], "segment": 1}, "non_field_errors"),
])
def test_bad_input_to_add_members_is_a_400_naming_the_field(staff_api, body, field):
    marketing_list = MarketingListFactory()
    response = staff_api.post(members_url(marketing_list), body, format="json")
    assert response.status_code == 400
    assert field in response.json(), response.json()
    assert not member_ids(marketing_list)


# -- reading and removing --------------------------------------------------------------------------

def test_members_are_listed_with_their_opt_in_and_source(staff_api):
    marketing_list = MarketingListFactory()
    person = PersonFactory(first_name="Ada", last_name="Lovelace", email="ada@example.org")
    staff_api.post(members_url(marketing_list), {"persons": [str(person.pk)]}, format="json")
    listing = staff_api.get(members_url(marketing_list)).json()
    assert listing["count"] == 1
    (member,) = listing["results"]
    assert {k: member[k] for k in ("id", "name", "email", "email_opt_in", "source")} == {
        "id": str(person.pk), "name": "Ada Lovelace", "email": "ada@example.org",
        "email_opt_in": "none", "source": "api"}
    assert member["added_at"]


def test_staff_remove_members_and_even_a_stopped_person_can_leave(staff_api):
    marketing_list = MarketingListFactory()
    people = PersonFactory.create_batch(3)
    staff_api.post(members_url(marketing_list), {"persons": [str(p.pk) for p in people]},
                   format="json")
    rights.processing_stop(person=people[0], source=services.Source.STAFF)
    response = staff_api.delete(members_url(marketing_list), {
        "persons": [str(people[0].pk), str(people[1].pk), str(uuid.uuid4())]}, format="json")
    assert response.status_code == 200
    assert response.json() == {"removed": 2}
    assert member_ids(marketing_list) == {people[2].pk}
    assert AuditEntry.objects.filter(action="list_remove").count() == 2
    bad = staff_api.delete(members_url(marketing_list), {"persons": ["x"]}, format="json")
    assert bad.status_code == 400 and "persons" in bad.json()


# -- the staff UI ----------------------------------------------------------------------------------

def test_staff_add_members_from_a_csv_page_and_see_the_bad_lines(staff_client):
    marketing_list = MarketingListFactory()
    ada = PersonFactory(email="ada@example.org")
    page = staff_client.get(reverse("admin:crm_marketinglist_change", args=[marketing_list.pk]))
    url = reverse("admin:crm_marketinglist_add_members", args=[marketing_list.pk])
    assert url in page.content.decode()
    response = staff_client.post(url, {"file": csv_file("email\nada@example.org\nnobody@x.org\n")},
                                 follow=True)
    assert member_ids(marketing_list) == {ada.pk}
    shown = [str(m) for m in response.context["messages"]]
    assert "1 people added to the list." in shown
    assert "Line 3: No person has this email." in shown
    refused = staff_client.post(url, {"file": csv_file("name\nAda\n")})
    assert refused.status_code == 200 and b"email column" in refused.content


def test_person_list_action_skips_stopped_and_erased_people(staff_client):
    marketing_list = MarketingListFactory()
    ok, stopped = PersonFactory(kind="contact"), stopped_person(kind="contact")
    response = staff_client.post(reverse("admin:crm_contact_changelist"), {
        "action": "add_to_marketing_list", "_selected_action": [str(ok.pk), str(stopped.pk)],
        "marketing_list": marketing_list.pk, "apply": "1"}, follow=True)
    assert member_ids(marketing_list) == {ok.pk}
    assert "Not added: processing stopped 1." in [str(m) for m in response.context["messages"]]
