import pytest

from consents import services
from consents.models import ConsentEvent, PurposeKind, Source, Verification
from crm.models import FieldDefinition, Person
from tests.factories import PersonFactory

pytestmark = pytest.mark.django_db
CONFIRMED = {"source": Source.PORTAL, "verified_by": Verification.EMAIL_CONFIRMATION}


@pytest.fixture
def news():
    return services.purpose_create(key="news", name="News", kind=PurposeKind.CUSTOM,
                                   title="Newsletter", text="Monthly news.")


def test_staff_reads_purposes_but_only_admins_write(staff_api, admin_api, news):
    listing = staff_api.get("/api/consent-purposes/")
    assert listing.status_code == 200
    assert listing.json()["results"][0]["current_version"]["version"] == 1
    new = {"key": "partners", "name": "Partners", "kind": "custom", "title": "Partners",
           "text": "We share with partners.",
           "visibility_rule": {"field": "region", "op": "eq", "value": "EU"}}
    assert staff_api.post("/api/consent-purposes/", new, format="json").status_code == 403
    created = admin_api.post("/api/consent-purposes/", new, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["shown_to"] == "region is 'EU'"
    changed = admin_api.patch(f"/api/consent-purposes/{created.json()['id']}/",
                              {"text": "We share with two partners."}, format="json")
    assert changed.json()["current_version"]["version"] == 2


@pytest.mark.parametrize(("payload", "field"), [
    ({"key": "x", "name": "X", "kind": "custom"}, "text"),
    ({"key": "x", "name": "X", "kind": "data_storage", "title": "T", "text": "T"}, "field"),
    ({"key": "x", "name": "X", "kind": "custom", "title": "T", "text": "T",
      "visibility_rule": {"field": "nope", "op": "empty"}}, "visibility_rule"),
    ({"key": "x", "name": "X", "kind": "weird", "title": "T", "text": "T"}, "kind"),
])
def test_bad_purpose_gets_400_with_field_errors(admin_api, payload, field):
    response = admin_api.post("/api/consent-purposes/", payload, format="json")
    assert response.status_code == 400 and field in response.json()


def test_recording_an_answer_through_the_api(staff_api, news):
    person = PersonFactory()
    url = f"/api/persons/{person.pk}/consents/"
    assert staff_api.post(url, {"purpose": "news", "action": "grant"},
                          format="json").status_code == 400  # a note is required
    recorded = staff_api.post(url, {"purpose": "news", "action": "grant",
                                    "note": "Asked by phone"}, format="json")
    assert recorded.status_code == 201 and recorded.json()["state"] == "granted"
    event = ConsentEvent.objects.get(person_id=person.pk)
    assert (event.source, event.verified_by) == ("api", "api_token")
    assert staff_api.get(url).json()["results"][0]["state"] == "granted"
    proof = staff_api.get(f"{url}news/proof/").json()
    assert proof["chain"]["intact"] and proof["steps"][0]["text"]["text"] == "Monthly news."


def test_person_list_filters_by_consent_state(staff_api, news):
    granted, other = PersonFactory(), PersonFactory()
    services.consent_grant(person=granted, purpose=news, **CONFIRMED)
    ids = {r["id"] for r in staff_api.get("/api/persons/?consent=news:granted").json()["results"]}
    assert ids == {str(granted.pk)}
    unknown = {r["id"] for r in
               staff_api.get("/api/persons/?consent=news:unknown").json()["results"]}
    assert unknown == {str(other.pk)}
    for bad in ("news", "news:yes", "ghost:granted"):
        assert staff_api.get(f"/api/persons/?consent={bad}").status_code == 400


def test_explain_cites_the_deciding_event(staff_api, news):
    tracking = services.purpose_create(key="tracking", name="Tracking",
                                       kind=PurposeKind.ENGAGEMENT_TRACKING, title="T", text="T")
    person = PersonFactory()
    consent = services.consent_grant(person=person, purpose=news, **CONFIRMED)
    body = staff_api.get(f"/api/persons/{person.pk}/explain/").json()
    assert body["consents"]["news"] == {"state": "granted", "event": consent.last_event_id,
                                        "decided_by": "event", "allowed": True}
    assert body["consents"][tracking.key]["decided_by"] == "setting:tracking.default_when_unknown"
    assert body["processing_stopped"] is False


def test_settings_api_is_admin_only_and_validates(staff_api, admin_api):
    assert staff_api.get("/api/settings/").status_code == 403
    body = admin_api.get("/api/settings/").json()
    assert body["campaigns"] == {"opt_in_accepted": "double"}
    assert body["tracking"] == {"default_when_unknown": False, "delete_on_revoke": True}
    changed = admin_api.patch("/api/settings/", {"campaigns": {"opt_in_accepted": "double+user"},
                                                 "tracking": {"default_when_unknown": True}},
                              format="json")
    assert changed.status_code == 200
    assert changed.json()["campaigns"]["opt_in_accepted"] == "double+user"
    bad = admin_api.patch("/api/settings/", {"campaigns": {"opt_in_accepted": "single"},
                                             "tracking": {"default_when_unknown": True}},
                          format="json")
    assert bad.status_code == 400 and "campaigns" in bad.json()
    for payload in ({"nope": {}}, {"campaigns": {"bogus": 1}}, ["x"],
                    {"tracking": {"default_when_unknown": "yes"}}):
        assert admin_api.patch("/api/settings/", payload, format="json").status_code == 400


def test_storage_revocation_via_api_clears_the_field(staff_api):
    services.purpose_create(key="store_phone", name="Phone", kind=PurposeKind.DATA_STORAGE,
                            field=FieldDefinition.objects.get(key="phone"), title="T", text="T")
    person = PersonFactory(phone="+39 06 1234567")
    staff_api.post(f"/api/persons/{person.pk}/consents/",
                   {"purpose": "store_phone", "action": "revoke", "note": "Asked by email"},
                   format="json")
    assert Person.objects.get(pk=person.pk).phone == ""


def test_explain_panel_on_the_staff_person_page(staff_client, news):
    person = PersonFactory()
    consent = services.consent_grant(person=person, purpose=news, **CONFIRMED)
    page = staff_client.get(f"/admin/crm/person/{person.pk}/change/").content.decode()
    assert "explain" in page and f"ledger event #{consent.last_event_id}" in page


def test_consents_block_lists_the_persons_answers(staff_client, news):
    person = PersonFactory()
    services.consent_grant(person=person, purpose=news, **CONFIRMED)
    page = staff_client.get(f"/admin/crm/person/{person.pk}/change/").content.decode()
    assert 'class="consent-row state-granted"' in page and "News" in page
