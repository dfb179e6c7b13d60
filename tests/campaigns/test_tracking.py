"""Engagement tracking under consent: signed links, the pixel and click views, the consent
re-check at event time, deletion on revoke and on erasure, and the events on the record."""

import uuid

import pytest
from django.conf import settings
from django.urls import reverse

from campaigns import tracking
from campaigns.emails import absolute_url
from campaigns.models import Campaign, EmailMessage, TrackingEvent
from consents import services as consent_services
from consents.models import PurposeKind, Source, Verification
from crm import rights
from tests.factories import AdminUserFactory, PersonFactory

pytestmark = pytest.mark.django_db
CONFIRMED = {"source": Source.PORTAL, "verified_by": Verification.EMAIL_CONFIRMATION}
SHOP = "https://shop.example/spring?utm=mail&id=7"


@pytest.fixture
def purpose():
    return consent_services.purpose_create(
        key="tracking", name="Engagement tracking", kind=PurposeKind.ENGAGEMENT_TRACKING,
        title="Opens and clicks", text="We record when you open our emails and click links.")


@pytest.fixture
def campaign():
    return Campaign.objects.create(name="Spring sale", subject="Spring", body_html="<p>Hi</p>",
                                   body_text="Hi")


def message_to(person, campaign=None):
    return EmailMessage.objects.create(
        person=person, kind="campaign", campaign_id=campaign.pk if campaign else None,
        idempotency_key=f"test:{uuid.uuid4()}", message_id=f"<{uuid.uuid4()}@test>",
        to_address=person.email, status="sent")


@pytest.fixture
def tracked(purpose, campaign):
    """A person who granted tracking consent, and a campaign message sent to them."""
    person = PersonFactory()
    consent_services.consent_grant(person=person, purpose=purpose, **CONFIRMED)
    return person, message_to(person, campaign)


def click_path(message_pk, url):
    return reverse("tracking-click", args=[tracking.click_token(message_pk, url)])


def open_path(message_pk):
    return reverse("tracking-open", args=[tracking.open_token(message_pk)])


# -- instrument -----------------------------------------------------------------------------------

def test_instrument_rewrites_web_links_but_not_mailto_anchors_or_the_contacts_own_pages():
    page = absolute_url(reverse("preference-page", args=["tok-en"]))
    unsubscribe = absolute_url(reverse("one-click-unsubscribe", args=["tok-en"]))
    body = (f'<html><body><a href="https://shop.example/spring?utm=mail&amp;id=7">Shop</a>'
            f"<a class='b' href='http://news.example/a'>News</a>"
            f'<a href="mailto:help@example.org">Mail us</a><a href="#top">Top</a>'
            f'<a href="{page}">Your preferences</a><a href="{unsubscribe}">Unsubscribe</a>'
            f"</body></html>")

    out = tracking.instrument(body, 41)

    click_base = absolute_url("/t/c/")
    assert "shop.example" not in out and "news.example" not in out
    assert f'href="{click_base}' in out and f"href='{click_base}" in out
    for url in (SHOP, "http://news.example/a"):
        assert f"{settings.SITE_URL}{click_path(41, url)}" in out  # absolute, exact URL signed
    for kept in ('href="mailto:help@example.org"', 'href="#top"', f'href="{page}"',
                 f'href="{unsubscribe}"'):
        assert kept in out
    pixel = f'<img src="{settings.SITE_URL}{open_path(41)}" width="1" height="1"'
    assert pixel in out and out.index(pixel) < out.index("</body>")


def test_instrument_appends_the_pixel_when_there_is_no_body_tag():
    out = tracking.instrument('<p><a href="https://x.example/">x</a></p>', 5)
    assert out.startswith("<p><a href=") and out.endswith(f'{open_path(5)}" width="1" height="1" '
                                                          'alt="" style="display:block;border:0;'
                                                          'width:1px;height:1px">')
    assert out.count("<img") == 1


def test_instrument_is_idempotent_on_its_own_links():
    once = tracking.instrument('<body><a href="https://x.example/">x</a></body>', 9)
    twice = tracking.instrument(once, 9)
    assert twice.count("/t/c/") == 1 and twice.count("<img") == 2  # links not wrapped twice


# -- click ----------------------------------------------------------------------------------------

def test_valid_click_redirects_to_exactly_the_signed_url_and_records_a_click(client, tracked,
                                                                            campaign):
    person, message = tracked
    response = client.get(click_path(message.pk, SHOP))
    assert response.status_code == 302 and response["Location"] == SHOP
    assert "no-store" in response["Cache-Control"]
    event = TrackingEvent.objects.get()
    assert (event.person_id, event.message_id, event.campaign_id, event.kind, event.url) == (
        person.pk, message.pk, campaign.pk, "click", SHOP)


def _tamper(token: str, part: int) -> str:
    pieces = token.split(".")
    pieces[part] = pieces[part][:-1] + ("A" if pieces[part][-1] != "A" else "B")
    return ".".join(pieces)


@pytest.mark.parametrize("forge", [
    pytest.param(lambda pk: _tamper(tracking.click_token(pk, SHOP), 2), id="signature-changed"),
    pytest.param(lambda pk: _tamper(tracking.click_token(pk, SHOP), 1), id="url-changed"),
    pytest.param(lambda pk: ".".join([*tracking.click_token(pk, SHOP).split(".")[:1],
                                      tracking.click_token(pk, "https://evil.example/")
                                      .split(".")[1],
                                      tracking.click_token(pk, SHOP).split(".")[2]]),
                 id="url-swapped"),
    pytest.param(lambda pk: tracking.click_token(pk + 1, SHOP).replace(
        tracking.click_token(pk + 1, SHOP).split(".")[0], tracking.click_token(pk, SHOP)
        .split(".")[0], 1), id="other-message"),
    pytest.param(lambda pk: tracking.open_token(pk), id="open-token"),
    pytest.param(lambda pk: "garbage", id="garbage"),
    pytest.param(lambda pk: "zz.!!.", id="malformed"),
])
def test_forged_or_altered_click_token_is_404_and_redirects_nowhere(client, tracked, forge):
    _person, message = tracked
    response = client.get(reverse("tracking-click", args=[forge(message.pk)]))
    assert response.status_code == 404 and "Location" not in response
    assert not TrackingEvent.objects.exists()


def test_head_follows_nothing_into_the_record(client, tracked):
    _person, message = tracked
    click = client.head(click_path(message.pk, SHOP))
    pixel = client.head(open_path(message.pk))
    assert click.status_code == 302 and click["Location"] == SHOP
    assert pixel.status_code == 200
    assert not TrackingEvent.objects.exists()  # a mail scanner's HEAD is not the reader


def test_tracking_links_refuse_writes(client, tracked):
    _person, message = tracked
    assert client.post(click_path(message.pk, SHOP)).status_code == 405
    assert client.post(open_path(message.pk)).status_code == 405
    assert not TrackingEvent.objects.exists()


# -- open -----------------------------------------------------------------------------------------

def test_pixel_answers_a_gif_that_is_never_cached_and_records_an_open(client, tracked):
    person, message = tracked
    response = client.get(open_path(message.pk))
    assert response.status_code == 200 and response["Content-Type"] == "image/gif"
    assert response.content.startswith(b"GIF89a") and "no-store" in response["Cache-Control"]
    event = TrackingEvent.objects.get()
    assert (event.person_id, event.message_id, event.kind, event.url) == (
        person.pk, message.pk, "open", "")


def test_pixel_with_a_bad_token_still_answers_the_image_but_records_nothing(client, tracked):
    _person, message = tracked
    response = client.get(reverse("tracking-open", args=[_tamper(
        tracking.open_token(message.pk), 1)]))
    assert response.status_code == 200 and response["Content-Type"] == "image/gif"
    assert not TrackingEvent.objects.exists()


def test_message_of_a_deleted_or_unknown_person_records_nothing(client, purpose):
    orphan = EmailMessage.objects.create(kind="campaign", idempotency_key="orphan",
                                         message_id="<orphan@test>")
    assert client.get(open_path(orphan.pk)).status_code == 200
    assert client.get(open_path(orphan.pk + 1000)).status_code == 200
    assert client.get(click_path(orphan.pk + 1000, SHOP)).status_code == 302
    assert not TrackingEvent.objects.exists()


def test_a_message_outside_any_campaign_is_tracked_without_one(client, purpose):
    person = PersonFactory()
    consent_services.consent_grant(person=person, purpose=purpose, **CONFIRMED)
    message = message_to(person)
    client.get(open_path(message.pk))
    assert TrackingEvent.objects.get().campaign_id is None


# -- consent, checked when the open or click happens -----------------------------------------------

@pytest.mark.parametrize(("answer", "default", "recorded"), [
    ("granted", False, True), ("granted", True, True),
    ("revoked", False, False), ("revoked", True, False),
    ("pending", False, False), ("pending", True, True),
    ("unknown", False, False), ("unknown", True, True),
])
def test_events_are_recorded_only_while_tracking_consent_allows(client, purpose, campaign,
                                                                answer, default, recorded):
    consent_services.settings_update(tracking_default_when_unknown=default,
                                     tracking_delete_on_revoke=False)
    person = PersonFactory()
    message = message_to(person, campaign)
    record = {"granted": consent_services.consent_grant, "revoked": consent_services.consent_revoke,
              "pending": consent_services.consent_request}.get(answer)
    if record:
        record(person=person, purpose=purpose, **CONFIRMED)

    assert client.get(click_path(message.pk, SHOP)).status_code == 302  # redirect either way
    client.get(open_path(message.pk))

    assert TrackingEvent.objects.filter(person=person).count() == (2 if recorded else 0)


def test_revocation_after_sending_stops_recording(client, tracked, purpose):
    person, message = tracked
    client.get(open_path(message.pk))
    consent_services.consent_revoke(person=person, purpose=purpose, **CONFIRMED)
    client.get(open_path(message.pk))
    client.get(click_path(message.pk, SHOP))
    assert not TrackingEvent.objects.filter(person=person).exists()


def test_stopped_processing_records_nothing(client, tracked):
    person, message = tracked
    rights.processing_stop(person=person, source="staff", actor=AdminUserFactory(),
                           note="Asked by phone")
    client.get(open_path(message.pk))
    assert not TrackingEvent.objects.exists()


# -- revoke and erasure delete past events ---------------------------------------------------------

def _plant_events(client, message):
    client.get(open_path(message.pk))
    client.get(click_path(message.pk, SHOP))


@pytest.mark.parametrize(("delete_on_revoke", "left"), [(True, 0), (False, 2)])
def test_revoking_tracking_consent_deletes_past_events_when_the_setting_is_on(
        client, tracked, purpose, campaign, delete_on_revoke, left):
    person, message = tracked
    other = PersonFactory()
    consent_services.consent_grant(person=other, purpose=purpose, **CONFIRMED)
    _plant_events(client, message)
    _plant_events(client, message_to(other, campaign))
    consent_services.settings_update(tracking_delete_on_revoke=delete_on_revoke)

    consent_services.consent_revoke(person=person, purpose=purpose, **CONFIRMED)

    assert TrackingEvent.objects.filter(person=person).count() == left
    assert TrackingEvent.objects.filter(person=other).count() == 2  # only theirs


def test_revoking_another_purpose_keeps_the_events(client, tracked):
    person, message = tracked
    news = consent_services.purpose_create(key="news", name="News", kind=PurposeKind.CUSTOM,
                                           title="News", text="Monthly news.")
    _plant_events(client, message)
    consent_services.consent_revoke(person=person, purpose=news, **CONFIRMED)
    assert TrackingEvent.objects.filter(person=person).count() == 2


def test_erasure_deletes_the_persons_events_and_export_lists_them(client, tracked):
    person, message = tracked
    _plant_events(client, message)

    exported = rights.person_export(person=person)["email"]["opens_and_clicks"]
    assert [(e["kind"], e["url"], e["campaign"]) for e in exported] == [
        ("open", "", "Spring sale"), ("click", SHOP, "Spring sale")]

    rights.person_erase(person=person, source="staff", actor=AdminUserFactory())
    assert not TrackingEvent.objects.filter(person=person).exists()


# -- the record and the settings -------------------------------------------------------------------

def test_events_show_on_the_staff_person_record_newest_first(client, tracked, staff_client):
    person, message = tracked
    _plant_events(client, message)
    page = staff_client.get(f"/admin/crm/person/{person.pk}/change/").content.decode()
    assert "Opens and clicks" in page
    assert page.index("tracking-click") < page.index("tracking-open") and SHOP.split("?")[0] in page


def test_settings_api_reads_and_validates_delete_on_revoke(admin_api):
    assert admin_api.get("/api/settings/").json()["tracking"] == {
        "default_when_unknown": False, "delete_on_revoke": True}
    changed = admin_api.patch("/api/settings/", {"tracking": {"delete_on_revoke": False}},
                              format="json")
    assert changed.status_code == 200
    assert changed.json()["tracking"]["delete_on_revoke"] is False
    for bad in ("yes", 1, None, "false"):
        response = admin_api.patch("/api/settings/", {"tracking": {"delete_on_revoke": bad}},
                                   format="json")
        assert response.status_code == 400
        assert "delete_on_revoke" in str(response.json())
    assert admin_api.get("/api/settings/").json()["tracking"]["delete_on_revoke"] is False


def test_admins_switch_delete_on_revoke_in_the_consent_settings_form(admin_client_):
    from consents.selectors import consent_settings

    url = reverse("admin:consents_consentsettings_change", args=[consent_settings().pk])
    assert 'name="tracking_delete_on_revoke"' in admin_client_.get(url).content.decode()
    response = admin_client_.post(url, {"opt_in_accepted": "double",
                                        "tracking_default_when_unknown": "on"})  # box unticked
    assert response.status_code == 302
    row = consent_settings()
    assert row.tracking_default_when_unknown and not row.tracking_delete_on_revoke
