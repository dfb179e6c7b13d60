"""The preference page and the confirmation link, through HTTP as a contact's browser uses them."""

import re
from datetime import timedelta

import pytest
from django.core import mail
from django.test import Client

from config import clock
from consents.models import Consent, ConsentEvent
from crm.models import ListMembership, Person
from crm.tokens import make_token
from preferences_portal.models import PendingChange
from tests.factories import PersonFactory
from tests.preferences_portal.conftest import confirm_links, set_portal

pytestmark = pytest.mark.django_db

SECTIONS = ["Email subscriptions", "How we use your data", "Your consents", "Your rights",
            "Download my data", "Who saw or received your data"]


def text_of(response) -> str:
    return re.sub(r"\s+", " ", response.content.decode())


def private(response) -> bool:
    return ("no-store" in response["Cache-Control"]
            and response["Referrer-Policy"] == "no-referrer")


def post(client, url, capture, data):
    with capture(execute=True):
        return client.post(url, data)


def test_page_shows_every_section_in_order_privately(client, person, page_url):
    response = client.get(page_url)
    assert response.status_code == 200 and private(response)
    html = text_of(response)
    positions = [html.index(title) for title in SECTIONS]
    assert positions == sorted(positions)
    assert "Newsletter" in html and "Events" in html
    assert "How Consenso uses your data" in html and "Version 1" in html
    assert "Measure opens and clicks" in html and "Offers from partners" in html
    assert "g•••@example.org" in html and "giulia@example.org" not in html
    # The admins' default is only a suggestion, pre-selected while unanswered and said so.
    assert re.search(r'value="granted" id="consent-partners-granted" checked', html)
    assert re.search(r'value="keep" id="consent-tracking-keep" checked', html)
    assert "is only our suggestion" in html
    assert "None: we have not passed your data to any partner." in html


def test_page_queries_do_not_grow_with_purposes_lists_and_rules(client, person, page_url):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from consents import services as consent_services
    from consents.models import PurposeKind

    def queries() -> int:
        client.get(page_url)  # compiles the rules once per process
        with CaptureQueriesContext(connection) as captured:
            assert client.get(page_url).status_code == 200
        return len(captured)

    before = queries()
    set_portal(access_rule={"field": "country", "op": "in", "value": ["IT", "DE"]})
    for n in range(5):
        consent_services.purpose_create(
            key=f"extra{n}", name=f"Extra {n}", kind=PurposeKind.CUSTOM, title=f"Extra {n}",
            text="More.", visibility_rule={"any": [{"field": "region", "op": "eq", "value": "EU"},
                                                   {"consent": "tracking", "state": "granted"}]})
    # One: the person (for the link check) with their own rows and the shared stamp.
    assert queries() == before == 1


def test_purpose_hidden_from_people_its_visibility_rule_does_not_admit(client, portal):
    person = PersonFactory(region="NA")
    html = text_of(client.get(f"/p/{make_token(person, purpose='portal')}/"))
    assert "Measure opens and clicks" in html and "Offers from partners" not in html


@pytest.mark.parametrize("settings_change", [
    {"access_rule": {"field": "region", "op": "eq", "value": "NA"}},
    {"enabled": False},
])
def test_outside_the_access_rule_or_while_disabled_only_email_preferences_show(
        client, person, page_url, settings_change):
    set_portal(**settings_change)
    html = text_of(client.get(page_url))
    assert "Email subscriptions" in html and "Newsletter" in html
    for hidden in SECTIONS[1:]:
        assert hidden not in html
    assert 'name="processing"' not in html and 'name="erasure"' not in html


def test_reveals_show_role_and_date_never_who(client, person, page_url):
    from encryption import access_log
    from tests.factories import StaffUserFactory

    user = StaffUserFactory(username="rita.reveal")
    access_log.append(user=user, role="Support", subject_id=person.pk, field="national_id",
                      reason="identity check", ip="198.51.100.7")
    html = text_of(client.get(page_url))
    assert "Support" in html and "rita.reveal" not in html and "identity check" not in html


def test_confirmation_email_speaks_the_pages_language(
        client, portal, django_capture_on_commit_callbacks):
    italian = PersonFactory(language="it")
    post(client, f"/p/{make_token(italian, purpose='portal')}/",
         django_capture_on_commit_callbacks, {"action": "save", "processing": "stop"})
    (message,) = [m for m in mail.outbox if "/confirm-change/" in m.body]
    assert message.subject == "Conferma le modifiche alle tue scelte sulla privacy"
    assert "Smettete di trattare i miei dati" in message.body
    link = confirm_links([message])[0].removeprefix("http://testserver")
    assert "Conferma queste modifiche" in text_of(client.get(link))


def test_page_speaks_the_persons_language_then_the_browsers(client, portal):
    italian = PersonFactory(language="it")
    url = f"/p/{make_token(italian, purpose='portal')}/"
    response = client.get(url, HTTP_ACCEPT_LANGUAGE="en")
    assert response["Content-Language"] == "it"
    html = text_of(response)
    assert "Le tue scelte sulla privacy" in html and "Iscrizioni email" in html
    assert "Email subscriptions" not in html
    assert text_of(client.get(url + "?lang=en")).count("Email subscriptions") == 1
    unknown = PersonFactory(language="")
    browser_it = client.get(f"/p/{make_token(unknown, purpose='portal')}/",
                            HTTP_ACCEPT_LANGUAGE="it-IT,it;q=0.9")
    assert "Iscrizioni email" in text_of(browser_it)


def test_page_post_requires_the_csrf_token(person, page_url, django_capture_on_commit_callbacks):
    browser = Client(enforce_csrf_checks=True)
    refused = browser.post(page_url, {"action": "save", "processing": "stop"})
    assert refused.status_code == 403 and private(refused)
    assert not PendingChange.objects.exists()
    browser.get(page_url)  # sets the CSRF cookie, as a browser opening the page does
    token = browser.cookies["csrftoken"].value
    evil = browser.post(page_url, {"action": "save", "processing": "stop",
                                   "csrfmiddlewaretoken": token},
                        HTTP_ORIGIN="https://evil.example")
    assert evil.status_code == 403
    # A no-referrer page posts with `Origin: null` (Fetch standard): the token decides.
    with django_capture_on_commit_callbacks(execute=True):
        accepted = browser.post(page_url, {"action": "save", "processing": "stop",
                                           "csrfmiddlewaretoken": token}, HTTP_ORIGIN="null")
    assert accepted.status_code == 200
    assert PendingChange.objects.count() == 1


def test_confirmation_page_post_requires_the_csrf_token(
        client, person, page_url, django_capture_on_commit_callbacks):
    post(client, page_url, django_capture_on_commit_callbacks,
         {"action": "save", "processing": "stop"})
    link = confirm_links(mail.outbox)[0].removeprefix("http://testserver")
    browser = Client(enforce_csrf_checks=True)
    assert browser.post(link).status_code == 403
    assert Person.objects.get(pk=person.pk).processing_stopped_at is None
    page = browser.get(link)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())[1]
    assert browser.post(link, {"csrfmiddlewaretoken": token}).status_code == 200
    assert Person.objects.get(pk=person.pk).processing_stopped_at is not None


def test_forwarded_page_link_cannot_change_anything_without_the_owners_mailbox(
        person, page_url, django_capture_on_commit_callbacks):
    """Someone who was forwarded an email holds the page link: their submission is stored,
    but the confirmation goes only to the address on file, and the page never shows it."""
    stranger = Client()
    response = post(stranger, page_url, django_capture_on_commit_callbacks, {
        "action": "save", "consent-tracking": "revoked", "processing": "stop", "erasure": "on",
        "lists_shown": [m.marketing_list_id for m in ListMembership.objects.filter(
            person=person)]})
    assert response.status_code == 200
    html = text_of(response)
    assert "Check your inbox" in html and "g•••@example.org" in html
    (message,) = mail.outbox
    assert message.to == ["giulia@example.org"]
    link = confirm_links([message])[0]
    assert link.rsplit("/", 2)[1] not in html  # the confirmation secret never reaches the page
    person.refresh_from_db()
    assert (person.processing_stopped_at, person.erasure_requested_at) == (None, None)
    assert not Consent.objects.filter(person=person).exists()
    assert ListMembership.objects.filter(person=person).count() == 2
    # The stranger tries to confirm by guessing: nothing.
    assert stranger.post(page_url.replace("/p/", "/confirm-change/")).status_code == 404
    assert Person.objects.get(pk=person.pk).processing_stopped_at is None


def test_page_shows_what_is_pending(client, person, page_url,
                                    django_capture_on_commit_callbacks):
    post(client, page_url, django_capture_on_commit_callbacks,
         {"action": "save", "processing": "stop"})
    html = text_of(client.get(page_url))
    assert "Waiting for your confirmation" in html
    assert "Stop processing my data (restriction)" in html


def test_confirm_get_and_head_change_nothing_post_applies_once(
        client, person, page_url, django_capture_on_commit_callbacks):
    post(client, page_url, django_capture_on_commit_callbacks,
         {"action": "save", "consent-tracking": "granted"})
    link = confirm_links(mail.outbox)[0].removeprefix("http://testserver")
    shown = client.get(link)
    assert shown.status_code == 200 and private(shown)
    assert "Give my consent: Measure opens and clicks" in text_of(shown)
    assert client.head(link).status_code == 200
    assert not ConsentEvent.objects.filter(subject="tracking").exists()
    done = client.post(link)
    assert done.status_code == 200 and "your changes are saved" in text_of(done)
    again = client.post(link)
    assert again.status_code == 409 and "already applied" in text_of(again)
    assert client.get(link).status_code == 200
    assert ConsentEvent.objects.filter(subject="tracking").count() == 1


def test_replaced_and_expired_links_say_so(client, person, page_url,
                                           django_capture_on_commit_callbacks):
    post(client, page_url, django_capture_on_commit_callbacks,
         {"action": "save", "processing": "stop"})
    post(client, page_url, django_capture_on_commit_callbacks,
         {"action": "save", "erasure": "on"})
    older, newer = (link.removeprefix("http://testserver") for link in confirm_links(mail.outbox))
    assert "This link was replaced" in text_of(client.get(older))
    assert client.post(older).status_code == 409
    with clock.frozen(clock.now() + timedelta(hours=49)):
        assert "This link has expired" in text_of(client.get(newer))
        assert client.post(newer).status_code == 409
    person.refresh_from_db()
    assert (person.processing_stopped_at, person.erasure_requested_at) == (None, None)


def test_download_my_data_is_its_own_form_and_downloads_after_confirming(
        client, person, page_url, django_capture_on_commit_callbacks):
    response = post(client, page_url, django_capture_on_commit_callbacks, {"action": "download"})
    assert "Give me a copy of my data to download" in text_of(response)
    # The download form does not touch the lists (their boxes were not in it).
    assert PendingChange.objects.get().changes == {"access": True}
    link = confirm_links(mail.outbox)[0].removeprefix("http://testserver")
    json_url = link + "my-data.json"
    assert client.get(json_url).status_code == 404  # not before confirming
    done = client.post(link)
    assert json_url in done.content.decode()
    download = client.get(json_url)
    assert download.status_code == 200 and private(download)
    assert download["Content-Disposition"].startswith("attachment;")
    assert b"giulia@example.org" in download.content
    assert client.get(link + "my-data.csv").status_code == 200


def test_nothing_to_change_and_bad_input(client, person, page_url):
    unchanged = client.post(page_url, {
        "action": "save", "list": [m.marketing_list_id for m in
                                   ListMembership.objects.filter(person=person)]})
    assert unchanged.status_code == 200 and "nothing to confirm" in text_of(unchanged)
    bad = client.post(page_url, {"action": "save", "consent-tracking": "maybe",
                                 "list": "x"})
    assert bad.status_code == 400 and "could not be read" in text_of(bad)
    assert not PendingChange.objects.exists()


def test_invalid_links_and_refused_methods_answer_privately(client, portal, page_url):
    for url in ("/p/nope/", "/confirm-change/nope/", "/confirm-change/nope/my-data.json"):
        response = client.get(url)
        assert response.status_code == 404 and private(response), url
    refused = client.put(page_url)
    assert refused.status_code == 405 and private(refused)


def test_erasure_kills_old_links_and_a_new_one_shows_only_that_data_was_erased(
        client, person, page_url):
    from crm import rights

    rights.person_erase(person=person, source="staff")
    assert client.get(page_url).status_code == 404
    erased = Person.objects.get(pk=person.pk)
    html = text_of(client.get(f"/p/{make_token(erased, purpose='portal')}/"))
    assert "Your data was erased" in html and "Email subscriptions" not in html
