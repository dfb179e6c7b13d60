"""Campaigns: the audience and its dry run agree with the gateway for every acceptance setting;
materialising is idempotent; merge fields render as text; every message links to the preference
page; tracking only with consent; pause, resume, cancel and schedule; stats; the API."""

import collections
import itertools
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.core import mail
from django.db import IntegrityError, transaction

from campaigns import audience, campaign_send, sender
from campaigns.gateway import Kind, Reason
from campaigns.models import AudienceChunk, Campaign, EmailMessage, TrackingEvent
from campaigns.models import CampaignStatus as C
from campaigns.models import MessageStatus as S
from campaigns.optin import Actor, opt_in_change
from config import clock
from consents import services as consent_services
from consents.models import OptInAccepted, PurposeKind, Source, Verification
from crm import services
from crm.models import EmailOptIn, ListMembership, MarketingList, Person
from tests.campaigns.test_gateway import expected, plant

pytestmark = pytest.mark.django_db


def _campaign(lists=(), rule=None, **content) -> Campaign:
    fields = {"name": "Spring", "subject": "Hello {{ first_name }}",
              "body_html": '<p>Dear {{ full_name }}, <a href="https://shop.example/spring">see'
                           "</a></p>",
              "body_text": "Dear {{ full_name }}, see https://shop.example/spring", **content}
    return campaign_send.campaign_save(campaign=Campaign(segment_rule=rule, **fields),
                                       lists=list(lists))


def _listed(*people, name="Newsletter") -> MarketingList:
    marketing_list, _ = MarketingList.objects.get_or_create(name=name)
    ListMembership.objects.bulk_create(
        [ListMembership(marketing_list=marketing_list, person=p) for p in people],
        ignore_conflicts=True)
    return marketing_list


def _person(email, state=EmailOptIn.DOUBLE_OPT_IN, **data) -> Person:
    person = services.person_create(data={"email": email, **data}, source="system")
    Person.objects.filter(pk=person.pk).update(email_opt_in=state)
    return Person.objects.get(pk=person.pk)


def _start(campaign) -> Campaign:
    """Send now, run the materialising task's work and the fan-out (on-commit callbacks do not
    run inside a test's transaction, so no send task runs), and return the fresh campaign."""
    campaign_send.campaign_send(campaign=campaign)
    campaign_send.campaign_start(campaign.pk)
    campaign_send.fan_out(campaign.pk)
    return Campaign.objects.get(pk=campaign.pk)


def _rows(campaign):
    return EmailMessage.objects.filter(campaign_id=campaign.pk)


def _send_all(campaign):
    sender.send_batch(list(_rows(campaign).values_list("pk", flat=True)))


def test_dry_run_and_materialised_audience_match_the_gateway_for_every_acceptance_setting():
    combos = list(itertools.product(EmailOptIn.values, [False, True], [False, True],
                                    [False, True]))
    people = {combo: plant(*combo, n) for n, combo in enumerate(combos)}
    newsletter = _listed(*people.values())
    for accepted in OptInAccepted.values:
        consent_services.settings_update(opt_in_accepted=accepted)
        want = {p.pk: expected(combo[0], Kind.CAMPAIGN, accepted, *combo[1:])
                for combo, p in people.items()}
        campaign = _campaign([newsletter], name=f"For {accepted}")
        run = audience.dry_run(campaign)
        assert run["total"] == len(people)
        assert {r: n for r, n in run["reasons"].items() if n} == dict(
            collections.Counter(want.values()))
        for reason in audience.ORDER:  # the link behind each count lists exactly those people
            assert set(audience.people_for_reason(campaign, reason).values_list(
                "pk", flat=True)) == {pk for pk, r in want.items() if r == reason}
        campaign = _start(campaign)
        mail.outbox.clear()
        _send_all(campaign)
        delivered = {m.to[0] for m in mail.outbox}
        assert delivered == {p.email for p in people.values() if want[p.pk] == Reason.ELIGIBLE}
        suppressed = collections.Counter(_rows(campaign).filter(status=S.SUPPRESSED)
                                         .values_list("reason", flat=True))
        # Suppressed addresses are materialised (their keyed hashes are not computable in SQL)
        # and stopped at hand-off; everyone else blocked never got a row.
        assert set(suppressed) <= {Reason.SUPPRESSED}
        assert campaign.audience_counts.get(Reason.ELIGIBLE, 0) == len(_rows(campaign))


def test_audience_is_the_union_of_lists_narrowed_by_the_rule_or_the_rule_alone():
    rome = _person("rome@example.org", company="Acme")
    milan = _person("milan@example.org", company="Other")
    turin = _person("turin@example.org", company="Acme")
    first, second = _listed(rome, name="One"), _listed(milan, name="Two")
    acme = {"field": "company", "op": "eq", "value": "Acme"}

    def members(campaign):
        return set(audience.audience(campaign).values_list("email", flat=True))

    assert members(_campaign([first, second])) == {"rome@example.org", "milan@example.org"}
    assert members(_campaign([first, second], rule=acme)) == {"rome@example.org"}
    assert members(_campaign([], rule=acme)) == {"rome@example.org", "turin@example.org"}
    assert members(_campaign([])) == set()
    del turin


def test_starting_twice_adds_nobody_twice():
    newsletter = _listed(*[_person(f"m{i}@example.org") for i in range(5)])
    campaign = _start(_campaign([newsletter]))
    assert campaign.materialised == 5
    assert campaign_send.campaign_start(campaign.pk) == 0  # the task delivered twice
    assert campaign_send.fan_out(campaign.pk) == 0  # its outbox rows exist already
    with pytest.raises(IntegrityError), transaction.atomic():
        campaign_send.materialise(campaign.pk)  # the (campaign, seq) key refuses a rerun
    keys = set(_rows(campaign).values_list("idempotency_key", flat=True))
    assert len(keys) == 5 and all(k.startswith(f"campaign:{campaign.pk}:") for k in keys)


@pytest.mark.parametrize("vendor", ["postgresql", "sqlite"], ids=["one-statement", "orm"])
def test_audience_is_fixed_in_ordered_chunks_and_fanned_out_to_one_row_per_person(
    monkeypatch, vendor
):
    monkeypatch.setattr(campaign_send, "AUDIENCE_CHUNK", 2)
    if vendor != "postgresql":  # the development database's path, run on this one
        monkeypatch.setattr(campaign_send.connection, "vendor", vendor)
    people = [_person(f"c{i}@example.org") for i in range(5)]
    stopped = _person("stopped@example.org")
    Person.objects.filter(pk=stopped.pk).update(processing_stopped_at=clock.now())
    campaign = _campaign([_listed(*people, stopped)])
    campaign_send.campaign_send(campaign=campaign)
    assert campaign_send.campaign_start(campaign.pk) == 5
    chunks = list(AudienceChunk.objects.filter(campaign=campaign).order_by("seq"))
    assert [len(c.people()) for c in chunks] == [2, 2, 1]
    assert [pk for c in chunks for pk in c.people()] == sorted(p.pk for p in people)
    assert Campaign.objects.get(pk=campaign.pk).materialised == 5
    Person.objects.filter(pk=people[3].pk).delete()  # gone before the fan-out: skipped
    assert campaign_send.fan_out(campaign.pk) == 4
    assert sorted(_rows(campaign).values_list("person_id", flat=True)) == sorted(
        p.pk for p in people if p.pk != people[3].pk)
    assert campaign_send.fan_out(campaign.pk) == 0  # a second run adds nobody
    assert Campaign.objects.get(pk=campaign.pk).fanned_out_at is not None


def test_fan_out_stops_between_chunks_when_the_campaign_is_paused_and_resumes_after(
    monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(campaign_send, "AUDIENCE_CHUNK", 2)
    campaign = _campaign([_listed(*[_person(f"p{i}@example.org") for i in range(5)])])
    campaign_send.campaign_send(campaign=campaign)
    campaign_send.campaign_start(campaign.pk)
    real_dispatch, calls = campaign_send.dispatch, []

    def pause_after_the_first_chunk(ids):
        real_dispatch(ids)
        calls.append(ids)
        if len(calls) == 1:
            Campaign.objects.filter(pk=campaign.pk).update(status=C.PAUSED)

    monkeypatch.setattr(campaign_send, "dispatch", pause_after_the_first_chunk)
    assert campaign_send.fan_out(campaign.pk) == 2
    assert Campaign.objects.get(pk=campaign.pk).fanned_out_at is None
    Campaign.objects.filter(pk=campaign.pk).update(status=C.SENDING)
    assert campaign_send.fan_out(campaign.pk) == 3
    assert _rows(campaign).count() == 5


def test_merge_fields_render_as_text_not_as_template_code_or_markup():
    person = _person("inject@example.org", first_name="{{7*7}}",
                     last_name="<script>alert(1)</script>")
    campaign = _start(_campaign([_listed(person)]))
    _send_all(campaign)
    [message] = mail.outbox
    html = message.alternatives[0][0]
    assert message.subject == "Hello {{7*7}}"
    assert "Dear {{7*7}} &lt;script&gt;alert(1)&lt;/script&gt;," in html
    assert "<script>" not in html and "49" not in message.subject
    assert "Dear {{7*7}} <script>alert(1)</script>, see" in message.body  # text part: as typed


@pytest.mark.parametrize(("field", "value"), [
    ("subject", "Hi {{ password }}"), ("body_html", "<p>{% include 'x.html' %}</p>"),
    ("body_text", "{{ first_name|upper }}"), ("body_html", '<a href="/relative">x</a>'),
    ("body_html", '<a href="https://shop.example/?who={{ email }}">x</a>'),
])
def test_unknown_merge_fields_template_tags_and_relative_links_are_400s(staff_api, field, value):
    data = {"name": "Bad", "subject": "Hi", "body_html": "<p>x</p>", "body_text": "x",
            field: value}
    response = staff_api.post("/api/campaigns/", data, format="json")
    assert response.status_code == 400
    assert field in response.json()


def test_a_link_that_is_just_the_preference_url_is_allowed(staff_api):
    response = staff_api.post("/api/campaigns/", {
        "name": "Ok", "subject": "Hi", "body_text": "x",
        "body_html": '<p><a href="{{ preferences_url }}">Your choices</a></p>'}, format="json")
    assert response.status_code == 201, response.json()


def test_every_campaign_email_links_to_the_preference_page_and_offers_one_click_unsubscribe(
        client):
    person = _person("links@example.org")
    campaign = _start(_campaign([_listed(person)]))
    _send_all(campaign)
    [message] = mail.outbox
    assert message.extra_headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "/u/" in message.extra_headers["List-Unsubscribe"]
    [link] = [w for w in message.body.split() if "/p/" in w]
    assert link in message.alternatives[0][0]
    page = client.get(urlsplit(link).path)
    assert page.status_code == 200
    assert page.context["page"].person.pk == person.pk


def test_campaign_email_goes_as_plain_7bit_lines_well_within_the_smtp_line_limit():
    person = _person("lines@example.org", first_name="Ada")
    campaign = _start(_campaign([_listed(person)]))
    _send_all(campaign)
    [message] = mail.outbox
    wire = message.message().as_bytes()
    # Over 998 characters a line forces quoted-printable on its part: the layout's long lines
    # (tags joined so that every server on the way handles fewer lines) must stay below it.
    assert b"quoted-printable" not in wire and b"base64" not in wire
    assert max(len(line) for line in wire.splitlines()) < 600
    html = message.alternatives[0][0]
    assert "Dear Ada" in html and html.count("\n") < 12  # the layout adds six line breaks


def _tracking_purpose():
    return consent_services.purpose_create(key="tracking", name="Tracking",
                                           kind=PurposeKind.ENGAGEMENT_TRACKING,
                                           title="Opens and clicks", text="We count them.")


def test_only_people_whose_tracking_consent_allows_it_get_a_pixel_and_tracked_links(
        staff_user):
    purpose = _tracking_purpose()
    granted, revoked, unknown = (_person(f"{n}@example.org") for n in ("g", "r", "u"))
    consent_services.consent_grant(person=granted, purpose=purpose, source=Source.STAFF,
                                   verified_by=Verification.STAFF_USER, note="On paper",
                                   actor=staff_user)
    consent_services.consent_revoke(person=revoked, purpose=purpose, source=Source.STAFF,
                                    verified_by=Verification.STAFF_USER, note="On the phone",
                                    actor=staff_user)
    campaign = _start(_campaign([_listed(granted, revoked, unknown)]))
    _send_all(campaign)
    html = {m.to[0]: m.alternatives[0][0] for m in mail.outbox}
    assert "/t/o/" in html["g@example.org"] and "/t/c/" in html["g@example.org"]
    assert "https://shop.example/spring" not in html["g@example.org"]
    for untracked in ("r@example.org", "u@example.org"):  # unknown: the default (off)
        assert "/t/o/" not in html[untracked] and "/t/c/" not in html[untracked]
        assert 'href="https://shop.example/spring"' in html[untracked]
    stats = campaign_send.campaign_stats(campaign)
    assert stats["tracking"] == {"tracked": 1, "tracking_not_consented": 2}


def test_pause_holds_the_queue_resume_sends_it_and_cancel_suppresses_the_rest():
    people = [_person(f"q{i}@example.org") for i in range(4)]
    campaign = _start(_campaign([_listed(*people)]))
    campaign_send.campaign_pause(campaign=campaign)
    assert set(_rows(campaign).values_list("status", flat=True)) == {S.HELD}
    _send_all(campaign)
    assert mail.outbox == []
    campaign_send.campaign_resume(campaign=campaign)
    first_two = list(_rows(campaign).order_by("pk").values_list("pk", flat=True)[:2])
    sender.send_batch(first_two)
    assert len(mail.outbox) == 2
    campaign_send.campaign_cancel(campaign=Campaign.objects.get(pk=campaign.pk))
    _send_all(campaign)
    assert len(mail.outbox) == 2
    statuses = collections.Counter(_rows(campaign).values_list("status", "reason"))
    assert statuses == {(S.SENT, ""): 2, (S.SUPPRESSED, campaign_send.CANCELLED_REASON): 2}
    with pytest.raises(campaign_send.CampaignStateError):
        campaign_send.campaign_resume(campaign=campaign)


def test_a_batch_claimed_before_a_pause_holds_its_messages_instead_of_sending_them():
    campaign = _start(_campaign([_listed(_person("late@example.org"))]))
    Campaign.objects.filter(pk=campaign.pk).update(status=C.PAUSED)  # paused mid-batch
    _send_all(campaign)
    assert mail.outbox == []
    assert list(_rows(campaign).values_list("status", flat=True)) == [S.HELD]


def test_a_scheduled_campaign_starts_when_its_time_comes():
    campaign = _campaign([_listed(_person("later@example.org"))])
    at = clock.now() + timedelta(hours=2)
    campaign_send.campaign_send(campaign=campaign, at=at)
    assert campaign_send.start_due_campaigns() == 0
    with clock.frozen(at + timedelta(seconds=1)):
        assert campaign_send.start_due_campaigns() == 1
    assert Campaign.objects.get(pk=campaign.pk).status == C.SENDING


def test_stats_count_sent_suppressed_by_reason_engagement_and_unsubscribes():
    stays, leaves, stopped_later = (_person(f"{n}@example.org") for n in ("s", "l", "x"))
    campaign = _start(_campaign([_listed(stays, leaves, stopped_later)]))
    from crm import rights

    rights.processing_stop(person=stopped_later, source="portal")
    _send_all(campaign)
    message = _rows(campaign).get(person=stays)
    TrackingEvent.objects.create(person=stays, message=message, campaign=campaign, kind="open")
    TrackingEvent.objects.create(person=stays, message=message, campaign=campaign, kind="open")
    TrackingEvent.objects.create(person=stays, message=message, campaign=campaign, kind="click",
                                 url="https://shop.example/spring")
    with clock.frozen(clock.now() + timedelta(minutes=5)):
        opt_in_change(person=leaves, actor=Actor.CONTACT,
                      verified_by=Verification.EMAIL_CONFIRMATION)
    campaign_send.campaign_finish_if_done(campaign.pk)
    stats = campaign_send.campaign_stats(Campaign.objects.get(pk=campaign.pk))
    assert (stats["status"], stats["sent"], stats["suppressed"]) == (C.SENT, 2, 1)
    assert stats["suppressed_by_reason"] == {Reason.PROCESSING_STOPPED: 1}
    assert stats["opens"] == {"people": 1, "total": 2}
    assert stats["clicks"] == {"people": 1, "total": 1}
    assert stats["unsubscribes"] == 1 and stats["progress"] == 100.0


@pytest.mark.parametrize("waiting", [S.QUEUED, S.SENDING, S.HELD])
def test_campaign_is_not_finished_while_one_message_waits_in_any_unsent_state(waiting):
    first, second = _person("a@example.org"), _person("b@example.org")
    campaign = _start(_campaign([_listed(first, second)]))
    _rows(campaign).update(status=S.SENT)
    _rows(campaign).filter(person=second).update(status=waiting)
    assert campaign_send.campaign_finish_if_done(campaign.pk) is False
    assert Campaign.objects.get(pk=campaign.pk).status == C.SENDING
    _rows(campaign).filter(person=second).update(status=S.SUPPRESSED)
    assert campaign_send.campaign_finish_if_done(campaign.pk) is True
    assert Campaign.objects.get(pk=campaign.pk).status == C.SENT


def test_api_builds_dry_runs_sends_and_reports_a_campaign(staff_api):
    eligible = _person("yes@example.org")
    opted_out = _person("no@example.org", state=EmailOptIn.OPT_OUT_CONTACT)
    newsletter = _listed(eligible, opted_out)
    created = staff_api.post("/api/campaigns/", {
        "name": "API", "subject": "Hi {{ first_name }}", "body_html": "<p>Hi</p>",
        "body_text": "Hi", "lists": [newsletter.pk]}, format="json")
    assert created.status_code == 201, created.json()
    pk = created.json()["id"]
    run = staff_api.get(f"/api/campaigns/{pk}/dry-run/").json()
    assert run["reasons"]["eligible"]["count"] == 1
    assert run["reasons"]["opted_out_contact"]["count"] == 1
    behind = staff_api.get(run["reasons"]["opted_out_contact"]["people"]).json()
    assert [p["email"] for p in behind["results"]] == ["no@example.org"]
    bad = staff_api.get("/api/persons/?campaign_audience=nope")
    assert bad.status_code == 400 and "campaign_audience" in bad.json()
    sent = staff_api.post(f"/api/campaigns/{pk}/send/", {}, format="json")
    assert sent.status_code == 202 and sent.json()["status"] == C.SENDING
    assert staff_api.patch(f"/api/campaigns/{pk}/", {"name": "x"},
                           format="json").status_code == 409
    assert staff_api.post(f"/api/campaigns/{pk}/resume/").status_code == 409
    assert staff_api.post(f"/api/campaigns/{pk}/cancel/").status_code == 200
    stats = staff_api.get(f"/api/campaigns/{pk}/stats/").json()
    assert stats["status"] == C.CANCELLED


def test_api_refuses_people_without_campaign_permissions(client):
    from rest_framework.test import APIClient

    from tests.factories import UserFactory

    user = UserFactory(username="nobody")
    api = APIClient()
    api.force_authenticate(user)
    assert api.get("/api/campaigns/").status_code == 403
    assert api.post("/api/campaigns/", {}, format="json").status_code == 403
