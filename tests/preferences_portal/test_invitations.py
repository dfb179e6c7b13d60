"""Invitations to the preference page: background runs (enabled, new purpose, re-permission)
through the gateway with counts by reason, throttling, resuming after a kill, and staff sending
one person their link (API and person page)."""

import re
from unittest import mock

import pytest

from campaigns.models import EmailMessage
from campaigns.optin import Actor, opt_in_change
from consents import services as consent_services
from consents.models import Source, Verification
from crm import rights
from crm import services as crm_services
from crm.tokens import person_for_token
from preferences_portal import invitations, tasks
from preferences_portal.models import InvitationRun
from tests.factories import PersonFactory, UserFactory

pytestmark = pytest.mark.django_db

EU = {"field": "region", "op": "eq", "value": "EU"}
LINK = re.compile(r"https?://\S+/p/(\S+)/")


def enable(capture, *, execute=True, **settings):
    with capture(execute=execute):
        consent_services.portal_settings_update(enabled=True, **settings)
    return InvitationRun.objects.filter(reason="enabled").first()


def link_owner(message):
    return person_for_token(LINK.search(message.body).group(1), purpose="portal")


@pytest.fixture
def crowd(admin_user_):
    """People across the gateway's reasons, most in the EU (the access rule below)."""
    people = {
        "eu_none": PersonFactory(region="EU"),
        "eu_single_user": PersonFactory(region="EU", email_opt_in="single_opt_in_user"),
        "eu_none_too": PersonFactory(region="EU"),
        "na_none": PersonFactory(region="NA"),
        "eu_opted_out_contact": PersonFactory(region="EU"),
        "eu_opted_out_user": PersonFactory(region="EU"),
        "eu_stopped": PersonFactory(region="EU"),
        "eu_suppressed": PersonFactory(region="EU"),
        "eu_no_address": PersonFactory(region="EU", email=""),
    }
    opt_in_change(person=people["eu_opted_out_contact"], actor=Actor.CONTACT,
                  verified_by=Verification.NONE)
    opt_in_change(person=people["eu_opted_out_user"], actor=Actor.STAFF, wanted="opt_out_user",
                  user=admin_user_, note="asked on the phone",
                  verified_by=Verification.STAFF_USER)
    rights.processing_stop(person=people["eu_stopped"], source="staff", actor=admin_user_)
    crm_services.suppress_address(email=people["eu_suppressed"].email, reason="bounce")
    return people


def test_enabling_invites_exactly_the_admitted_people_and_counts_the_rest_by_reason(
        crowd, django_capture_on_commit_callbacks, mailoutbox):
    run = enable(django_capture_on_commit_callbacks, access_rule=EU)
    run.refresh_from_db()
    assert run.state == "done" and run.finished_at is not None
    assert (run.total, run.processed, run.sent) == (8, 8, 3)
    assert run.skipped == {"opted_out_contact": 1, "opted_out_user": 1,
                           "processing_stopped": 1, "suppressed": 1, "no_valid_address": 1}
    invited = {crowd[k].pk for k in ("eu_none", "eu_single_user", "eu_none_too")}
    assert {m.to[0] for m in mailoutbox} == {crowd[k].email for k in
                                               ("eu_none", "eu_single_user", "eu_none_too")}
    # Each email carries the recipient's own link, absolute, to their page.
    for message in mailoutbox:
        owner = link_owner(message)
        assert owner.pk in invited and message.to == [owner.email]
    rows = EmailMessage.objects.filter(template="portal_invite")
    assert {r.kind for r in rows} == {"portal_invite"} and rows.count() == 3


def test_switching_the_page_off_and_on_does_not_invite_anyone_twice(
        crowd, django_capture_on_commit_callbacks, mailoutbox):
    enable(django_capture_on_commit_callbacks, access_rule=EU)
    consent_services.portal_settings_update(enabled=False)
    enable(django_capture_on_commit_callbacks)
    second = InvitationRun.objects.order_by("-pk").first()
    assert second.sent == 0 and second.skipped["already_invited"] == 3
    assert len(mailoutbox) == 3


def test_a_run_resumes_after_a_worker_is_killed_mid_batch(
        crowd, django_capture_on_commit_callbacks, mailoutbox):
    run = enable(django_capture_on_commit_callbacks, execute=False)  # queued, not yet sent
    assert run.state == "queued"
    with django_capture_on_commit_callbacks(execute=True):
        assert invitations.invitation_run_step(run.pk, size=3) is True
    run.refresh_from_db()
    assert (run.state, run.processed) == ("running", 3)
    first_batch = EmailMessage.objects.filter(template="portal_invite").count()
    # The worker dies after writing the rest of the emails, before its batch commits: the
    # batch's transaction (emails, counters, resume point) rolls back whole.
    with mock.patch.object(invitations.emails, "dispatch", side_effect=SystemExit("killed")), \
            pytest.raises(SystemExit):
        invitations.invitation_run_step(run.pk, size=6)
    run.refresh_from_db()
    assert run.processed == 3
    assert EmailMessage.objects.filter(template="portal_invite").count() == first_batch
    # Redelivered, the task carries on from the resume point.
    with django_capture_on_commit_callbacks(execute=True):
        tasks.send_invitations.delay(run.pk)
    run.refresh_from_db()
    assert (run.state, run.processed, run.sent) == ("done", 9, 4)
    per_person = EmailMessage.objects.filter(template="portal_invite").values_list(
        "person_id", flat=True)
    assert len(per_person) == len(set(per_person)) == 4
    assert len(mailoutbox) == 4


def test_batches_are_spaced_out_by_the_configured_rate(crowd, settings,
                                                       django_capture_on_commit_callbacks):
    settings.PORTAL_INVITES_PER_MINUTE = 2
    run = enable(django_capture_on_commit_callbacks, execute=False)
    assert invitations.batch_size() == 2 and invitations.pause_seconds() == 60.0
    with mock.patch.object(tasks.send_invitations, "apply_async") as later:
        tasks.send_invitations(run.pk)  # as a worker runs it (not inline)
    run.refresh_from_db()
    assert run.processed == 2
    later.assert_called_once_with([run.pk], countdown=60.0)


def test_disabling_the_page_stops_a_run_and_resume_finishes_it(
        crowd, django_capture_on_commit_callbacks, mailoutbox):
    run = enable(django_capture_on_commit_callbacks, execute=False)
    invitations.invitation_run_step(run.pk, size=2)
    consent_services.portal_settings_update(enabled=False)
    assert invitations.invitation_run_step(run.pk) is False
    run.refresh_from_db()
    assert run.state == "failed" and run.processed == 2
    with django_capture_on_commit_callbacks(execute=False):
        consent_services.portal_settings_update(enabled=True)
    with django_capture_on_commit_callbacks(execute=True):
        assert invitations.invitation_run_resume(run=run)
    run.refresh_from_db()
    assert run.state == "done" and run.processed == 9 and run.sent == 4


# -- new purposes ---------------------------------------------------------------------------------

def new_purpose(capture, key="newsletter_profiling", visibility_rule=None):
    with capture(execute=True):
        return consent_services.purpose_create(
            key=key, name="Profiling", kind="custom", title="Profiling for offers",
            text="We use your purchases to tailor offers.", visibility_rule=visibility_rule)


def test_a_new_purpose_is_announced_to_the_people_both_rules_and_its_visibility_admit(
        crowd, django_capture_on_commit_callbacks, mailoutbox):
    italian = PersonFactory(region="EU", country="IT")
    PersonFactory(region="EU", country="FR")
    PersonFactory(region="NA", country="IT")  # outside the access rule
    enable(django_capture_on_commit_callbacks, access_rule=EU, notification_rule={
        "field": "country", "op": "in", "value": ["IT", "FR"]})
    mailoutbox.clear()
    purpose = new_purpose(django_capture_on_commit_callbacks,
                          visibility_rule={"field": "country", "op": "eq", "value": "IT"})
    run = InvitationRun.objects.get(reason="new_purpose")
    assert run.purpose == purpose
    # The crowd is Italian (the factory's country) and in the EU; the FR and NA people are not.
    expected = {crowd[k].email for k in ("eu_none", "eu_single_user", "eu_none_too")} | {
        italian.email}
    assert {m.to[0] for m in mailoutbox} == expected
    assert all("Profiling for offers" in m.subject for m in mailoutbox)


def test_no_run_for_a_new_purpose_when_nobody_is_to_be_notified(
        crowd, django_capture_on_commit_callbacks, mailoutbox):
    new_purpose(django_capture_on_commit_callbacks, key="while_disabled")
    enable(django_capture_on_commit_callbacks)  # notification rule empty: nobody
    new_purpose(django_capture_on_commit_callbacks, key="nobody_notified")
    assert not InvitationRun.objects.filter(reason="new_purpose").exists()


# -- re-permission --------------------------------------------------------------------------------

@pytest.fixture
def outdated(crowd, admin_user_, django_capture_on_commit_callbacks):
    """Two people granted version 1, one granted version 2, one revoked under version 1."""
    purpose = consent_services.purpose_create(key="research", name="Research", kind="custom",
                                              title="Research", text="Version one.")

    def grant(person, action=consent_services.consent_grant):
        action(person=person, purpose=purpose, source=Source.STAFF,
               verified_by=Verification.STAFF_USER, actor=admin_user_, note="paper form")

    grant(crowd["eu_none"])
    grant(crowd["eu_single_user"])
    grant(crowd["eu_opted_out_contact"])  # outdated, but opted out: skipped
    grant(crowd["eu_none_too"], consent_services.consent_revoke)
    consent_services.purpose_publish_version(purpose=purpose, title="Research",
                                             text="Version two: now with partners.")
    grant(crowd["na_none"])
    enable(django_capture_on_commit_callbacks, execute=False)
    return purpose


def test_repermission_asks_only_people_whose_grant_is_on_an_older_text(
        admin_api, crowd, outdated, django_capture_on_commit_callbacks, mailoutbox):
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_api.post("/api/consent-purposes/research/repermission/")
    assert response.status_code == 202, response.json()
    assert response.json()["reason"] == "repermission"
    run = InvitationRun.objects.get(pk=response.json()["id"])
    assert (run.state, run.total, run.sent, run.skipped) == (
        "done", 3, 2, {"opted_out_contact": 1})
    assert {m.to[0] for m in mailoutbox} == {crowd["eu_none"].email, crowd["eu_single_user"].email}
    assert all("Research" in m.subject and "version 2" in m.body for m in mailoutbox)
    # Asking again for the same text sends nothing more.
    with django_capture_on_commit_callbacks(execute=True):
        again = admin_api.post("/api/consent-purposes/research/repermission/").json()
    assert again["sent"] == 0 and len(mailoutbox) == 2
    assert InvitationRun.objects.get(pk=again["id"]).skipped["already_invited"] == 2
    body = admin_api.get(f"/api/invitation-runs/{run.pk}/").json()
    assert body["processed"] == 3 and body["purpose"] == "research"
    listed = admin_api.get("/api/invitation-runs/").json()["results"]
    assert [r["reason"] for r in listed] == ["repermission", "repermission", "enabled"]


def test_repermission_statuses(admin_api, staff_api, outdated):
    assert staff_api.post("/api/consent-purposes/research/repermission/").status_code == 403
    assert staff_api.get("/api/invitation-runs/").status_code == 403
    assert admin_api.post("/api/consent-purposes/nope/repermission/").status_code == 404
    consent_services.purpose_create(key="fresh", name="Fresh", kind="custom", title="Fresh",
                                    text="Only one version.")
    nobody = admin_api.post("/api/consent-purposes/fresh/repermission/")
    assert nobody.status_code == 409 and nobody.json()["code"] == "nothing_to_send"
    consent_services.portal_settings_update(enabled=False)
    assert admin_api.post("/api/consent-purposes/research/repermission/").status_code == 409
    assert not InvitationRun.objects.filter(reason="repermission").exists()


def test_repermission_admin_action_starts_a_run(admin_client_, outdated,
                                                django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client_.post("/admin/consents/consentpurpose/", {
            "action": "request_repermission", "_selected_action": [outdated.pk]})
    assert response.status_code == 302
    run = InvitationRun.objects.get(reason="repermission")
    assert run.sent == 2 and run.created_by.username == "ada.admin"


# -- one person -----------------------------------------------------------------------------------

def test_staff_send_one_person_their_link_even_outside_the_access_rule(
        staff_api, django_capture_on_commit_callbacks, mailoutbox):
    consent_services.portal_settings_update(access_rule=EU)
    outsider = PersonFactory(region="NA")
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_api.post(f"/api/persons/{outsider.pk}/portal-invite/")
    assert response.status_code == 202, response.json()
    assert [m.to for m in mailoutbox] == [[outsider.email]]
    assert link_owner(mailoutbox[0]) == outsider


def test_portal_invite_statuses(staff_api, crowd):
    opted_out = crowd["eu_opted_out_contact"]
    refused = staff_api.post(f"/api/persons/{opted_out.pk}/portal-invite/")
    assert refused.status_code == 409
    assert refused.json()["reason"] == "opted_out_contact"
    stopped = staff_api.post(f"/api/persons/{crowd['eu_stopped'].pk}/portal-invite/")
    assert stopped.status_code == 409 and stopped.json()["reason"] == "processing_stopped"
    unknown = "00000000-0000-4000-8000-000000000000"
    assert staff_api.post(f"/api/persons/{unknown}/portal-invite/").status_code == 404
    assert not EmailMessage.objects.filter(kind="portal_invite").exists()


def test_portal_invite_needs_the_change_person_permission(crowd):
    from tests.conftest import _api

    nobody = _api(UserFactory(username="no.role"))
    response = nobody.post(f"/api/persons/{crowd['eu_none'].pk}/portal-invite/")
    assert response.status_code == 403


def test_person_page_button_shows_then_sends_on_post(
        staff_client, crowd, django_capture_on_commit_callbacks, mailoutbox):
    person = crowd["eu_none"]
    page = staff_client.get(f"/admin/crm/person/{person.pk}/change/").content.decode()
    url = f"/admin/crm/person/{person.pk}/portal-invite/"
    assert "Send preference-page link" in page and url in page
    confirm = staff_client.get(url)
    assert confirm.status_code == 200 and b"Send the link" in confirm.content
    assert not mailoutbox  # a GET sends nothing
    with django_capture_on_commit_callbacks(execute=True):
        assert staff_client.post(url).status_code == 302
    assert [m.to for m in mailoutbox] == [[person.email]]
    refused = staff_client.get(f"/admin/crm/person/{crowd['eu_stopped'].pk}/portal-invite/")
    assert b"processing_stopped" in refused.content and b"Send the link" not in refused.content
