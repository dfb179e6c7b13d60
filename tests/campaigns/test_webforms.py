import pytest
from django.core import mail

from campaigns.models import WebForm
from campaigns.optin import Actor, opt_in_change
from consents import services as consent_services
from consents.models import ConsentEvent, PurposeKind, Verification
from consents.selectors import consent_states
from crm.models import Person
from tests.factories import PersonFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def form():
    purpose = consent_services.purpose_create(key="partners", name="Partners",
                                              kind=PurposeKind.CUSTOM, title="T", text="T")
    web_form = WebForm.objects.create(slug="newsletter", name="Newsletter",
                                      fields=["first_name", "company"], autoresponder=True)
    web_form.consent_purposes.add(purpose)
    return web_form


def post(client, data, **extra):
    return client.post("/forms/newsletter/", data, REMOTE_ADDR=extra.pop("ip", "198.51.100.7"),
                       **extra)


def test_submission_with_box_ticked_creates_lead_opt_in_consent_and_sends_double_opt_in(
    client, form, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, {"email": "New@Example.org", "first_name": "Nina",
                                 "marketing": "on", "consent_partners": "on"})
    assert response.status_code == 200 and b"Thank you" in response.content
    person = Person.objects.get(email="new@example.org")
    assert (person.kind, person.first_name, person.email_opt_in) == (
        "lead", "Nina", "single_opt_in_webform")
    assert consent_states(person) == {"partners": "granted"}
    assert ConsentEvent.objects.filter(person_id=person.pk, source="webform").count() == 2
    subjects = sorted(m.subject for m in mail.outbox)
    assert subjects == ["Please confirm you want our emails", "We received your message"]


def test_existing_person_is_completed_never_overwritten(client, form):
    person = PersonFactory(email="known@example.org", first_name="Staff-entered", company="")
    post(client, {"email": "known@example.org", "first_name": "Other", "company": "Acme"})
    person.refresh_from_db()
    assert (person.first_name, person.company) == ("Staff-entered", "Acme")


def test_a_new_signup_reopens_the_contacts_own_opt_out(client, form):
    person = PersonFactory(email="back@example.org")
    opt_in_change(person=person, actor=Actor.CONTACT, verified_by=Verification.NONE)
    post(client, {"email": "back@example.org", "marketing": "on"})
    assert Person.objects.get(pk=person.pk).email_opt_in == "single_opt_in_webform"


@pytest.mark.parametrize(("data", "field"), [
    ({}, "email"), ({"email": "nope"}, "email"), ({"email": "a@example.org", "country": "Italy"},
                                                   "country"),
])
def test_bad_input_gets_400_with_field_errors(client, form, data, field):
    form.fields = ["country"]
    form.save()
    response = post(client, data, HTTP_ACCEPT="application/json")
    assert response.status_code == 400 and field in response.json()
    assert not Person.objects.exists()


def test_honeypot_is_accepted_and_ignored(client, form):
    assert post(client, {"email": "bot@example.org", "website": "http://spam"}).status_code == 200
    assert not Person.objects.exists()


def test_twenty_posts_per_minute_from_one_ip_are_accepted(client, form):
    for i in range(20):
        assert post(client, {"email": f"p{i}@example.org"}, ip="203.0.113.50").status_code == 200
    assert Person.objects.count() == 20


def test_at_most_five_double_opt_in_emails_per_address_per_hour(
    client, form, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(8):
            post(client, {"email": "again@example.org", "marketing": "on"})
    confirmations = [m for m in mail.outbox if "confirm" in m.subject]
    assert len(confirmations) == 5


def test_unknown_or_inactive_form_is_404(client, form):
    assert client.post("/forms/ghost/", {"email": "a@example.org"}).status_code == 404


def test_web_forms_api_is_for_admins_and_gives_a_snippet(admin_api, staff_api, form):
    assert staff_api.get("/api/web-forms/").status_code == 403
    created = admin_api.post("/api/web-forms/", {"slug": "events", "name": "Events",
                                                 "fields": ["first_name"],
                                                 "consent_purposes": ["partners"]}, format="json")
    assert created.status_code == 201, created.json()
    assert 'action="http' in created.json()["snippet"] and "/forms/events/" in (
        created.json()["snippet"])
    bad = admin_api.post("/api/web-forms/", {"slug": "x", "name": "X",
                                             "fields": ["card_number"]}, format="json")
    assert bad.status_code == 400 and "fields" in bad.json()
