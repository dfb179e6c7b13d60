"""Changes a contact makes on their preference page: stored as pending, applied once confirmed.

A submission is diffed against the person's current state and stored as a `PendingChange`; the
confirmation email goes to the address on file, so whoever merely holds the page link (a
forwarded email) cannot change anything. The link carries a random secret; only its keyed hash is
stored. Confirming applies the change exactly once, through the services that own each piece
(consents, opt-in, lists, rights); nothing here writes their tables.
"""

import json
import logging
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.urls import reverse
from django.utils import translation
from django.utils.crypto import salted_hmac
from django.utils.translation import gettext as _

from campaigns import emails
from campaigns.gateway import Kind
from campaigns.models import EmailMessage
from campaigns.optin import Actor, opt_in_change
from config import clock
from consents import services as consent_services
from consents.models import ConsentPurpose, ConsentState, Verification
from consents.models import Source as ConsentSource
from consents.selectors import portal_settings
from crm import services as crm_services
from crm.errors import ServiceError
from crm.models import MarketingList, Person

from . import selectors
from .models import PendingChange, SharedStamp

logger = logging.getLogger(__name__)

State = PendingChange.State
# One person's page may ask for this many confirmations an hour: a forwarded link cannot be
# used to flood the owner's inbox.
MAX_SUBMISSIONS_PER_HOUR = 5
EMAIL_PARTS = ("lists_leave", "opt_out")


class NothingToChange(ServiceError):
    code = "nothing_to_change"


class TooManySubmissions(ServiceError):
    status_code = 429
    code = "too_many_submissions"


class ChangeLinkInvalid(ServiceError):
    status_code = 404
    code = "link_invalid"


class ChangeNotPending(ServiceError):
    """The link names a change that was applied, replaced by a newer one, or has expired."""

    status_code = 409
    code = "change_not_pending"

    def __init__(self, message: str, *, state: str):
        super().__init__(message)
        self.state = state


def token_hash(token: str) -> str:
    """Keyed (SECRET_KEY) hash of a confirmation secret: what the database keeps."""
    return salted_hmac("consenso.portal-confirm", token or "", algorithm="sha256").hexdigest()


# -- submitting -----------------------------------------------------------------------------------

def _diff(*, page: selectors.Page, wanted: dict) -> dict:
    """What would change, as ids and states only. Parts the page did not offer are ignored."""
    person, changes = page.person, {}
    shown = set(wanted.get("lists_shown", ()))
    keep = set(wanted.get("lists_keep", ()))
    leave = sorted(ml.pk for ml in page.lists if ml.pk in shown and ml.pk not in keep)
    if leave:
        changes["lists_leave"] = leave
    if wanted.get("opt_out") and not page.opted_out:
        changes["opt_out"] = True
    if not page.full:
        return changes
    consents, suggested = {}, {}
    for key, state in (wanted.get("consents") or {}).items():
        choice = page.consent(key)
        if choice is None or state not in selectors.ANSWERS or state == choice.state:
            continue
        if choice.suggested and state == ConsentState.GRANTED:
            # A pre-selected suggestion left as it was is not a choice (CJEU, Planet49): it is
            # granted only if the contact ticks it on the confirmation page.
            suggested[key] = {"version": choice.version.version}
            continue
        # The version the contact read: a grant applies only if it is still the current text.
        consents[key] = {"state": state, "version": choice.version.version}
    if consents:
        changes["consents"] = consents
    if suggested:
        changes["suggested"] = suggested
    stopped = person.processing_stopped_at is not None
    if wanted.get("processing") == "stop" and not stopped:
        changes["processing"] = "stop"
    elif wanted.get("processing") == "resume" and stopped:
        changes["processing"] = "resume"
    if wanted.get("erasure") and person.erasure_requested_at is None:
        changes["erasure"] = True
    if wanted.get("access"):
        changes["access"] = True
    return changes


def pending_change_submit(*, person: Person, wanted: dict, language: str = "") -> PendingChange:
    """Store what the contact asked for and email them the confirmation link.

    `wanted` is the parsed form: `lists_shown` and `lists_keep` (ids of the lists the page
    showed, and of those to stay on), `opt_out` (bool),
    `consents` (purpose key → granted|revoked), `processing` (stop|resume), `erasure` and
    `access` (bools). Nothing changes until the link is followed; an older pending change of the
    same person is superseded. Raises NothingToChange or TooManySubmissions.
    """
    person = Person.objects.get(pk=person.pk)  # diff against fresh state, not the caller's copy
    page = selectors.page_for(person)
    changes = _diff(page=page, wanted=wanted)
    if not changes:
        raise NothingToChange(_("Your choices are already as you set them: nothing to confirm."))
    now = clock.now()
    recent = PendingChange.objects.filter(person=person,
                                          created_at__gt=now - timedelta(hours=1)).count()
    if recent >= MAX_SUBMISSIONS_PER_HOUR:
        raise TooManySubmissions(_("You asked for several changes in the last hour. Please use "
                                   "the latest email we sent you, or try again later."))
    token = secrets.token_urlsafe(32)
    hours = portal_settings().confirmation_hours
    with transaction.atomic():
        PendingChange.objects.filter(person=person, state=State.PENDING).update(
            state=State.SUPERSEDED)
        change = PendingChange.objects.create(
            person=person, changes=changes, token_hash=token_hash(token),
            language=language or "", created_at=now, expires_at=now + timedelta(hours=hours))
        link = emails.absolute_url(reverse("portal-confirm-change", args=[token]))
        with translation.override(language or translation.get_language()):
            message = emails.enqueue(
                person=person, kind=Kind.SYSTEM, template="portal_confirm",
                context={"lines": selectors.change_summary(changes), "confirm_url": link,
                         "expires_hours": hours},
                idempotency_key=f"portal-confirm:{change.pk}", dispatch=False)
        # The outbox row is the source of truth: if the broker is down the submission is still
        # saved and the sweeper sends the mail later, so a broker error must not reach the page.
        transaction.on_commit(lambda: emails.dispatch([message.pk]), robust=True)
    logger.info("portal change %s submitted (%s)", change.pk, ",".join(sorted(changes)))
    return change


# -- confirming -----------------------------------------------------------------------------------

def pending_change_find(token: str) -> PendingChange:
    """The change a confirmation link names, in whatever state (ChangeLinkInvalid if none)."""
    change = (PendingChange.objects.select_related("person")
              .filter(token_hash=token_hash(token)).first())
    if change is None:
        raise ChangeLinkInvalid(_("This link is not valid."))
    return change


def link_state(change: PendingChange) -> str:
    """pending | applied | superseded | expired, as the contact's link sees it."""
    if change.state == State.PENDING and selectors.expired(change):
        return State.EXPIRED
    return change.state


_NOT_PENDING = {
    State.APPLIED: lambda: _("These changes were already confirmed and applied."),
    State.SUPERSEDED: lambda: _("You sent newer changes after this one, so this link was "
                                "replaced: use the link in the latest email."),
    State.EXPIRED: lambda: _("This confirmation link has expired. Open your preference page "
                             "and send your choices again."),
}


def not_pending_message(state: str) -> str:
    return _NOT_PENDING[state]()


@dataclass
class Applied:
    change: PendingChange
    # Consents not granted because their text changed after the contact read it.
    outdated: list = field(default_factory=list)


def pending_change_confirm(*, token: str, accepted=(), ip: str | None = None,
                           user_agent: str | None = None) -> Applied:
    """Apply the change once. The row lock serialises parallel clicks: the first applies it, the
    others find it applied (ChangeNotPending). Everything commits together or not at all.

    `accepted`: keys of the suggested consents the contact ticked on the confirmation page (the
    others are not granted)."""
    with transaction.atomic():
        change = (PendingChange.objects.select_for_update(of=("self",))
                  .filter(token_hash=token_hash(token)).first())
        if change is None:
            raise ChangeLinkInvalid(_("This link is not valid."))
        if Person.objects.filter(pk=change.person_id, erased_at__isnull=False).exists():
            raise ChangeLinkInvalid(_("This link is not valid."))
        state = link_state(change)
        if state != State.PENDING:
            raise ChangeNotPending(not_pending_message(state), state=state)
        change.state, change.applied_at = State.APPLIED, clock.now()
        change.changes = {**change.changes, "suggested_accepted": sorted(
            set(accepted) & set(change.changes.get("suggested", {})))}
        change.save(update_fields=["state", "applied_at", "changes"])
        outdated = _apply(change, ip=ip, user_agent=user_agent)
    logger.info("portal change %s applied", change.pk)
    return Applied(change=change, outdated=outdated)


def _apply(change: PendingChange, *, ip, user_agent) -> list[str]:
    from crm import rights

    person = Person.objects.get(pk=change.person_id)
    changes = change.changes
    if not selectors.page_admits(person):
        # The admins narrowed the page since: apply only what the page still offers.
        changes = {k: v for k, v in changes.items() if k in EMAIL_PARTS}
    message = (EmailMessage.objects.filter(idempotency_key=f"portal-confirm:{change.pk}")
               .values_list("message_id", flat=True).first())
    evidence = {"change": str(change.pk), "message_id": message or ""}
    portal = crm_services.Source.PORTAL
    # Resume first and stop last: a stopped record refuses the writes in between.
    if changes.get("processing") == "resume":
        person = rights.processing_resume(person=person, source=portal)
    outdated = []
    answers = {**{key: {"state": ConsentState.GRANTED, **changes["suggested"][key]}
                 for key in changes.get("suggested_accepted", [])},
              **changes.get("consents", {})}
    purposes = {p.key: p for p in ConsentPurpose.objects.filter(key__in=list(answers))}
    for key, wanted in answers.items():
        purpose = purposes.get(key)
        if purpose is None:
            continue
        record = dict(person=person, purpose=purpose, source=ConsentSource.PORTAL,
                      verified_by=Verification.EMAIL_CONFIRMATION,
                      evidence={**evidence, "version_read": wanted["version"]},
                      ip=ip, user_agent=user_agent)
        if wanted["state"] == ConsentState.REVOKED:
            consent_services.consent_revoke(**record)
        elif consent_services.current_version(purpose).version == wanted["version"]:
            consent_services.consent_grant(**record)
        else:
            # Consent is given to a text: one the contact did not read cannot be agreed to.
            outdated.append(purpose.versions.get(version=wanted["version"]).title)
    for marketing_list in MarketingList.objects.filter(pk__in=changes.get("lists_leave", [])):
        crm_services.marketing_list_remove(marketing_list=marketing_list,
                                           person_ids=[person.pk], source=portal)
    if changes.get("opt_out"):
        opt_in_change(person=person, actor=Actor.CONTACT,
                      verified_by=Verification.EMAIL_CONFIRMATION, evidence=evidence,
                      ip=ip, user_agent=user_agent)
    if changes.get("processing") == "stop":
        rights.processing_stop(person=person, source=portal)
    if changes.get("erasure"):
        rights.erasure_request(person=person, source=portal)
    if changes.get("access"):
        rights.rights_request_record(person=person, kind="access", source=portal)
    return outdated


def shared_stamp_bump(**_signal) -> None:
    """A row every page shows alike changed: give the shared stamp a new value, in the writer's
    transaction, so each process reads those rows afresh on its next page view (see
    selectors.shared_rows). Connected to those models' save and delete in apps.py: a change by
    any path (services, staff admin) counts. A random value, never a counter, so that a
    rolled-back change can never make an old value current again."""
    if not SharedStamp.objects.filter(pk=1).update(value=uuid.uuid4().hex):
        SharedStamp.objects.get_or_create(pk=1, defaults={"value": uuid.uuid4().hex})


def pending_changes_erase(person_id) -> None:
    """The preference page's eraser (crm.extensions.erasers): a person's pending and past
    changes go with their data, so no confirmation link of theirs works after erasure."""
    PendingChange.objects.filter(person_id=person_id).delete()


# -- "Download my data" ---------------------------------------------------------------------------

FORMATS = {"json": "application/json", "csv": "text/csv; charset=utf-8"}


def pending_change_export(*, token: str, fmt: str) -> tuple[str, str, str]:
    """(file name, content type, body) of the person's data, for a confirmed access request
    whose download window is open; ChangeLinkInvalid otherwise."""
    from crm import rights

    change = pending_change_find(token)
    if fmt not in FORMATS or not selectors.download_open(change):
        raise ChangeLinkInvalid(_("This download link is not valid any more."))
    if fmt == "json":
        body = json.dumps(rights.person_export(person=change.person), cls=DjangoJSONEncoder,
                          ensure_ascii=False, indent=2)
    else:
        body = rights.person_export_csv(person=change.person)
    rights.access_request_served(person=change.person)
    return f"my-data-{clock.now():%Y-%m-%d}.{fmt}", FORMATS[fmt], body
