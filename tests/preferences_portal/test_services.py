"""Pending changes: stored as a diff, confirmed once from the emailed link, replaced by newer
ones, expiring, and applied only through the owning services."""

from datetime import timedelta

import pytest
from django.core import mail

from campaigns.models import EmailMessage
from config import clock
from consents import services as consent_services
from consents.models import Consent, ConsentEvent
from crm.models import ListMembership, Person
from preferences_portal import services
from preferences_portal.models import PendingChange
from tests.preferences_portal.conftest import confirm_links, set_portal

pytestmark = pytest.mark.django_db


def submit(person, capture, **wanted):
    with capture(execute=True):
        return services.pending_change_submit(person=person, wanted=wanted, language="en")


def token_of(message) -> str:
    return confirm_links([message])[0].rstrip("/").rsplit("/", 1)[1]


def last_token() -> str:
    return token_of(mail.outbox[-1])


def test_submission_stores_only_the_difference_and_changes_nothing_yet(
        person, django_capture_on_commit_callbacks):
    newsletter, events = (m.marketing_list_id for m in
                          ListMembership.objects.filter(person=person).order_by("pk"))
    change = submit(person, django_capture_on_commit_callbacks,
                    lists_shown=[newsletter, events], lists_keep=[events],
                    consents={"tracking": "revoked", "partners": "granted"},
                    processing="stop", erasure=False)
    assert change.changes == {
        "lists_leave": [newsletter],
        "consents": {"tracking": {"state": "revoked", "version": 1}},
        # The admins' pre-selected suggestion is not a choice until ticked when confirming.
        "suggested": {"partners": {"version": 1}},
        "processing": "stop",
    }
    assert change.state == PendingChange.State.PENDING
    person.refresh_from_db()
    assert person.processing_stopped_at is None
    assert not Consent.objects.filter(person=person).exists()
    assert ListMembership.objects.filter(person=person).count() == 2
    # No secret stored in clear: only its keyed hash.
    assert change.token_hash == services.token_hash(last_token()) != last_token()


def test_confirmation_goes_to_the_address_on_file_and_applies_through_the_owners(
        person, django_capture_on_commit_callbacks):
    submit(person, django_capture_on_commit_callbacks, consents={"tracking": "granted"},
           opt_out=True, processing="stop", erasure=True, access=True)
    (message,) = mail.outbox
    assert message.to == ["giulia@example.org"]
    assert "Give my consent: Measure opens and clicks" in message.body
    applied = services.pending_change_confirm(token=token_of(message), ip="203.0.113.9",
                                              user_agent="test")
    assert applied.outdated == []
    person.refresh_from_db()
    assert person.email_opt_in == "opt_out_contact"
    assert person.processing_stopped_at is not None
    assert person.erasure_requested_at is not None
    grant = ConsentEvent.objects.get(person_id=person.pk, subject="tracking")
    assert (grant.state, grant.source, grant.verified_by) == (
        "granted", "portal", "email_confirmation")
    sent = EmailMessage.objects.get(template="portal_confirm")
    assert grant.evidence["message_id"] == sent.message_id
    from crm.models import RightsRequest

    assert set(RightsRequest.objects.filter(person_ref=person.pk).values_list("kind", flat=True)
               ) == {"access", "erasure", "restriction"}


@pytest.mark.parametrize("ticked", [True, False])
def test_a_suggestion_left_as_it_was_is_granted_only_if_ticked_when_confirming(
        person, django_capture_on_commit_callbacks, ticked):
    submit(person, django_capture_on_commit_callbacks, consents={"partners": "granted"},
           processing="stop")
    assert "Our suggestion" in mail.outbox[-1].body
    applied = services.pending_change_confirm(token=last_token(),
                                              accepted=["partners"] if ticked else [])
    assert ConsentEvent.objects.filter(subject="partners").exists() is ticked
    assert Person.objects.get(pk=person.pk).processing_stopped_at is not None
    assert applied.change.changes["suggested_accepted"] == (["partners"] if ticked else [])


def test_replayed_link_says_already_applied_and_changes_nothing(
        person, django_capture_on_commit_callbacks):
    submit(person, django_capture_on_commit_callbacks, consents={"tracking": "granted"})
    token = last_token()
    services.pending_change_confirm(token=token)
    events = ConsentEvent.objects.count()
    with pytest.raises(services.ChangeNotPending) as replay:
        services.pending_change_confirm(token=token)
    assert replay.value.state == "applied"
    assert ConsentEvent.objects.count() == events


def test_a_newer_submission_replaces_the_older_pending_one(
        person, django_capture_on_commit_callbacks):
    submit(person, django_capture_on_commit_callbacks, consents={"tracking": "granted"})
    older = last_token()
    submit(person, django_capture_on_commit_callbacks, consents={"tracking": "revoked"})
    with pytest.raises(services.ChangeNotPending) as replaced:
        services.pending_change_confirm(token=older)
    assert replaced.value.state == "superseded"
    assert not ConsentEvent.objects.filter(person_id=person.pk, subject="tracking").exists()
    services.pending_change_confirm(token=last_token())
    assert Consent.objects.get(person=person, purpose__key="tracking").state == "revoked"


@pytest.mark.parametrize(("hours", "after", "valid"), [
    (48, timedelta(hours=48), True),
    (48, timedelta(hours=48, microseconds=1), False),
    (2, timedelta(hours=2), True),
    (2, timedelta(hours=2, seconds=1), False),
])
def test_link_is_valid_up_to_its_limit_and_not_a_moment_after(
        person, django_capture_on_commit_callbacks, hours, after, valid):
    set_portal(confirmation_hours=hours)
    start = clock.now()
    with clock.frozen(start):
        submit(person, django_capture_on_commit_callbacks, processing="stop")
    with clock.frozen(start + after):
        if valid:
            services.pending_change_confirm(token=last_token())
        else:
            with pytest.raises(services.ChangeNotPending) as late:
                services.pending_change_confirm(token=last_token())
            assert late.value.state == "expired"
    person.refresh_from_db()
    assert (person.processing_stopped_at is not None) is valid


def test_submitting_what_is_already_true_asks_for_nothing(person):
    with pytest.raises(services.NothingToChange):
        services.pending_change_submit(person=person, wanted={"processing": "resume",
                                                              "consents": {}})
    assert not PendingChange.objects.exists()


def test_at_most_five_confirmations_an_hour_per_person(
        person, django_capture_on_commit_callbacks):
    for _ in range(services.MAX_SUBMISSIONS_PER_HOUR):
        submit(person, django_capture_on_commit_callbacks, processing="stop")
    with pytest.raises(services.TooManySubmissions):
        submit(person, django_capture_on_commit_callbacks, processing="stop")
    assert len(mail.outbox) == services.MAX_SUBMISSIONS_PER_HOUR
    with clock.frozen(clock.now() + timedelta(hours=1, seconds=1)):
        submit(person, django_capture_on_commit_callbacks, processing="stop")


def test_a_grant_to_a_text_changed_after_reading_is_not_recorded(
        person, portal, django_capture_on_commit_callbacks):
    submit(person, django_capture_on_commit_callbacks, consents={"tracking": "granted"})
    consent_services.purpose_publish_version(purpose=portal["tracking"], title="New title",
                                             text="We now also count link clicks.")
    applied = services.pending_change_confirm(token=last_token())
    assert applied.outdated == ["Measure opens and clicks"]
    assert not Consent.objects.filter(person=person).exists()


def test_people_outside_the_access_rule_can_change_only_email_preferences(
        person, django_capture_on_commit_callbacks):
    set_portal(access_rule={"field": "region", "op": "eq", "value": "NA"})
    change = submit(person, django_capture_on_commit_callbacks, opt_out=True,
                    consents={"tracking": "granted"}, processing="stop", erasure=True,
                    access=True)
    assert change.changes == {"opt_out": True}


def test_a_narrowed_access_rule_applies_only_the_email_part_of_an_older_change(
        person, django_capture_on_commit_callbacks):
    submit(person, django_capture_on_commit_callbacks, opt_out=True, processing="stop")
    set_portal(enabled=False)
    services.pending_change_confirm(token=last_token())
    person.refresh_from_db()
    assert person.email_opt_in == "opt_out_contact" and person.processing_stopped_at is None


def test_resume_from_the_page_lifts_the_stop(person, django_capture_on_commit_callbacks):
    from crm import rights

    rights.processing_stop(person=person, source="portal")
    submit(person, django_capture_on_commit_callbacks, processing="resume")
    services.pending_change_confirm(token=last_token())
    assert Person.objects.get(pk=person.pk).processing_stopped_at is None


def test_confirmed_download_gives_json_and_csv_for_a_limited_time(
        person, django_capture_on_commit_callbacks):
    submit(person, django_capture_on_commit_callbacks, access=True)
    token = last_token()
    with pytest.raises(services.ChangeLinkInvalid):  # not before it is confirmed
        services.pending_change_export(token=token, fmt="json")
    services.pending_change_confirm(token=token)
    name, content_type, body = services.pending_change_export(token=token, fmt="json")
    assert name.endswith(".json") and content_type == "application/json"
    assert "giulia@example.org" in body
    assert "giulia@example.org" in services.pending_change_export(token=token, fmt="csv")[2]
    with pytest.raises(services.ChangeLinkInvalid):
        services.pending_change_export(token=token, fmt="xml")
    from crm.models import RightsRequest

    served = RightsRequest.objects.get(person_ref=person.pk, kind="access")
    assert served.state == RightsRequest.State.DONE and served.handled_at is not None
    with clock.frozen(clock.now() + timedelta(hours=49)), \
            pytest.raises(services.ChangeLinkInvalid):
        services.pending_change_export(token=token, fmt="json")


def test_erasure_voids_waiting_confirmation_links(person, django_capture_on_commit_callbacks):
    from crm import rights

    submit(person, django_capture_on_commit_callbacks, consents={"tracking": "granted"})
    rights.person_erase(person=person, source="staff")
    with pytest.raises(services.ChangeLinkInvalid):
        services.pending_change_confirm(token=last_token())
    # The page's eraser is registered with crm: erasing the person took their changes too.
    assert not PendingChange.objects.filter(person=person).exists()
