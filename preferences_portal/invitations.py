"""Invitations to the preference page: background runs (page enabled, a purpose added, a
re-permission request) and staff sending one person their link.

A run walks its people in primary-key order, a batch per step (preferences_portal.tasks), and
commits each batch's emails together with its counters and resume point, so a worker killed
mid-batch repeats that batch and nothing else. Every invitation is mail kind `portal_invite`:
the gateway is asked for the whole batch before the emails are written, and again by the sender
right before SMTP. Who is targeted:

- enabled: everyone the access rule admits (empty rule: everyone);
- new_purpose: people admitted by the access rule AND the notification rule AND the purpose's
  visibility rule. The notification rule is who "is notified of newly requested consents": when
  it is empty nobody is, and no run starts;
- repermission: people whose grant of the purpose refers to an older text, narrowed by the
  access and visibility rules (the others cannot answer on the page).

Only people created before the run started are walked, so the target set does not drift while
it runs. Idempotency keys name the intent, not the run (`portal-invite:enabled:<person>`), so a
person is invited once per intent however often the page is switched off and on; such people
count as skipped `already_invited`.
"""

import logging

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import translation
from django.utils.translation import gettext as _

from campaigns import emails, gateway
from campaigns.models import EmailMessage
from config import clock
from consents import rules
from consents.models import ConsentPurpose
from consents.selectors import people_on_outdated_versions, portal_settings
from crm.errors import ServiceError
from crm.models import Person

from .models import InvitationRun

log = logging.getLogger(__name__)

MAX_BATCH = 100
ALREADY_INVITED = "already_invited"
Reason = InvitationRun.Reason
State = InvitationRun.State


class NotSent(ServiceError):
    """The gateway refused the invitation; `reason` is its reason code."""

    status_code = 409
    code = "portal_invite_not_sent"

    def __init__(self, message: str, *, reason: str):
        super().__init__(message)
        self.reason = reason

    def as_dict(self) -> dict:
        return {**super().as_dict(), "reason": self.reason}


class NothingToSend(ServiceError):
    status_code = 409
    code = "nothing_to_send"


def page_url(person: Person) -> str:
    """The absolute link to the person's own preference page."""
    return emails.person_link(person, url_name="preference-page", purpose="portal")


def batch_size() -> int:
    return max(1, min(MAX_BATCH, settings.PORTAL_INVITES_PER_MINUTE))


def pause_seconds() -> float:
    """Seconds between two batches so that a run sends PORTAL_INVITES_PER_MINUTE at most."""
    return 60.0 * batch_size() / max(1, settings.PORTAL_INVITES_PER_MINUTE)


# -- who ------------------------------------------------------------------------------------------

def _admitted(rule) -> Q:
    return rules.to_q(rule) if rule else Q()


def targets(run: InvitationRun, portal=None):
    """The people a run invites (read fresh at each step: an admin narrowing a rule mid-run
    stops invitations to the people it no longer admits)."""
    portal = portal or portal_settings()
    people = Person.objects.filter(created_at__lte=run.created_at)
    if run.reason == Reason.ENABLED:
        return people.filter(_admitted(portal.access_rule))
    purpose = run.purpose
    if purpose is None:  # deleted since: nobody left to ask about it
        return people.none()
    visible = _admitted(purpose.visibility_rule)
    if run.reason == Reason.NEW_PURPOSE:
        if not portal.notification_rule:
            return people.none()
        return people.filter(_admitted(portal.access_rule), _admitted(portal.notification_rule),
                             visible)
    outdated = people_on_outdated_versions(purpose).values("pk")
    return people.filter(_admitted(portal.access_rule), visible, pk__in=outdated)


def _key_prefix(run: InvitationRun) -> str:
    if run.reason == Reason.ENABLED:
        return "portal-invite:enabled:"
    if run.reason == Reason.NEW_PURPOSE:
        return f"portal-invite:purpose:{run.purpose_id}:"
    # Per text version: asking again after a later change is a new request.
    latest = run.purpose.versions.order_by("-version").values_list("version", flat=True).first()
    return f"portal-repermission:{run.purpose_id}:v{latest}:"


# -- starting runs --------------------------------------------------------------------------------

def invitation_run_start(*, reason: str, purpose: ConsentPurpose | None = None,
                         actor=None) -> InvitationRun:
    """Create a run and queue its first batch once the caller commits."""
    from .tasks import send_invitations

    if reason not in Reason.values:
        raise ValueError(f"Unknown invitation reason {reason!r}.")
    if reason != Reason.ENABLED and purpose is None:
        raise ValueError("A purpose run needs its purpose.")
    run = InvitationRun.objects.create(reason=reason, purpose=purpose,
                                       created_by=actor if getattr(actor, "pk", None) else None)
    log.info("invitation run %s started (%s)", run.pk, reason)
    transaction.on_commit(lambda: send_invitations.delay(run.pk))
    return run


def on_portal_enabled(portal, actor) -> None:
    """consents.services.portal_enabled_hooks: the page was just switched on."""
    invitation_run_start(reason=Reason.ENABLED, actor=actor)


def on_purpose_created(purpose: ConsentPurpose) -> None:
    """consents.services.purpose_created_hooks: ask the people to be notified of new consents
    (see the module docstring: nobody when the notification rule is empty)."""
    portal = portal_settings()
    if portal.enabled and portal.notification_rule and purpose.active:
        invitation_run_start(reason=Reason.NEW_PURPOSE, purpose=purpose)


def repermission_start(*, purpose: ConsentPurpose, actor=None) -> InvitationRun:
    """Ask again the people who granted `purpose` under an older text. Refused (409) while the
    page is disabled or when nobody is to be asked."""
    if not portal_settings().enabled:
        raise NothingToSend(_("Enable the preference page first: the request links to it."))
    probe = InvitationRun(reason=Reason.REPERMISSION, purpose=purpose, created_at=clock.now())
    if not targets(probe).exists():
        raise NothingToSend(_("Nobody granted this purpose under an older text."))
    return invitation_run_start(reason=Reason.REPERMISSION, purpose=purpose, actor=actor)


def invitation_run_resume(*, run: InvitationRun) -> bool:
    """Queue a stopped or stalled run again from its resume point (False if it is done)."""
    from .tasks import send_invitations

    if run.state == State.DONE:
        return False
    transaction.on_commit(lambda: send_invitations.delay(run.pk))
    return True


# -- one batch ------------------------------------------------------------------------------------

def invitation_run_step(run_id: int, *, size: int | None = None) -> bool:
    """Invite the next batch of a run; True while more may remain. A run whose page was
    disabled meanwhile stops (state failed) and can be resumed once it is enabled again."""
    size = size or batch_size()
    with transaction.atomic():
        run = InvitationRun.objects.select_for_update(of=("self",)).select_related(
            "purpose").get(pk=run_id)
        if run.state == State.DONE:
            return False
        portal = portal_settings()
        if not portal.enabled:
            run.state, run.finished_at = State.FAILED, clock.now()
            run.save(update_fields=["state", "finished_at"])
            log.info("invitation run %s stopped: the preference page is disabled", run.pk)
            return False
        try:
            people_qs = targets(run, portal)
            if run.state == State.QUEUED:
                run.total = people_qs.count()
        except ValidationError:
            # A rule naming a field deleted since it was saved: stop rather than guess who.
            run.state, run.finished_at = State.FAILED, clock.now()
            run.save(update_fields=["state", "finished_at"])
            log.warning("invitation run %s stopped: a rule no longer validates", run.pk)
            return False
        run.state, run.finished_at = State.RUNNING, None
        if run.last_person_id:
            people_qs = people_qs.filter(pk__gt=run.last_person_id)
        people = list(people_qs.order_by("pk")[:size])
        if not people:
            run.state, run.finished_at = State.DONE, clock.now()
            run.total = max(run.total, run.processed)
            run.save()
            log.info("invitation run %s done: %s sent of %s", run.pk, run.sent, run.processed)
            return False
        _invite_batch(run, people)
        run.save()
    return True


def _invite_batch(run: InvitationRun, people: list[Person]) -> None:
    prefix, context = _key_prefix(run), _run_context(run)
    keys = {person.pk: f"{prefix}{person.pk}" for person in people}
    already = set(EmailMessage.objects.filter(idempotency_key__in=keys.values())
                  .values_list("idempotency_key", flat=True))
    decisions = gateway.recheck(list(keys), gateway.Kind.PORTAL_INVITE)
    skipped = dict(run.skipped)
    queued = []
    for person in people:
        decision = decisions[person.pk]
        if keys[person.pk] in already:
            outcome = ALREADY_INVITED
        elif not decision.allowed:
            outcome = decision.reason
        else:
            queued.append(_enqueue(person, run=run, key=keys[person.pk], context=context).pk)
            continue
        skipped[outcome] = skipped.get(outcome, 0) + 1
    run.skipped, run.sent = skipped, run.sent + len(queued)
    run.processed += len(people)
    run.last_person_id = people[-1].pk
    emails.dispatch(queued)


def _run_context(run: InvitationRun | None) -> dict:
    context = {"reason": run.reason if run else "staff"}
    if run is not None and run.purpose is not None:
        version = run.purpose.versions.order_by("-version").first()
        context.update(purpose=run.purpose.name,
                       purpose_title=version.title if version else run.purpose.name,
                       version=version.version if version else None)
    return context


def _enqueue(person: Person, *, run: InvitationRun | None, key: str, context: dict,
             dispatch: bool = False):
    template = ("portal_repermission" if run is not None and run.reason == Reason.REPERMISSION
                else "portal_invite")
    with translation.override(person.language or settings.LANGUAGE_CODE):
        return emails.enqueue(person=person, kind=gateway.Kind.PORTAL_INVITE, template=template,
                              context={**context, "page_url": page_url(person)},
                              idempotency_key=key, dispatch=dispatch)


# -- one person -----------------------------------------------------------------------------------

def portal_invite_send(*, person: Person, actor=None) -> EmailMessage:
    """Email one person their page link (staff), even outside the access rule: their page then
    shows only the email preferences. NotSent (409, with the gateway's reason) when the gateway
    refuses. A second request within the same minute returns the first message (double click)."""
    person = Person.objects.get(pk=person.pk)
    decision = gateway.decide(person, gateway.Kind.PORTAL_INVITE)
    if not decision.allowed:
        raise NotSent(_("Not sent: %(reason)s.") % {"reason": decision.reason},
                      reason=decision.reason)
    key = f"portal-link:{person.pk}:{clock.now():%Y%m%dT%H%M}"
    with transaction.atomic():
        message = _enqueue(person, run=None, key=key, context=_run_context(None),
                           dispatch=True)
    log.info("portal link queued as message %s by user %s", message.pk,
             getattr(actor, "pk", None))
    return message
