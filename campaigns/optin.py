"""Email opt-in status: the six states and who may move a person between them.

This is the one place the transition rules live. Every change is a ledger event (subject
`email_opt_in`) written in the same transaction as the new state.
"""

from dataclasses import dataclass

from django.db import transaction
from django.utils.translation import gettext as _

from config import clock
from consents import ledger
from consents.models import ConsentEvent, Source
from crm.errors import ProcessingStopped, ServiceError, TransitionForbidden
from crm.models import EmailOptIn, Person

S = EmailOptIn
OPTED_OUT = (S.OPT_OUT_USER, S.OPT_OUT_CONTACT)


class Actor:
    """Who asks for the change; each may make different moves."""

    STAFF = "staff"            # a staff member (admin UI or API)
    CONTACT = "contact"        # the person, from the preference page or an unsubscribe
    WEBFORM = "webform"        # the person, by submitting a web form with the box ticked
    DOUBLE_OPT_IN = "double_opt_in"  # the person, by confirming the double opt-in link


@dataclass(frozen=True)
class Move:
    state: str
    reason: str = ""


def next_state(current: str, *, actor: str, wanted: str | None = None) -> Move:
    """Where a request by `actor` takes a person at `current` (raises TransitionForbidden)."""
    if actor == Actor.CONTACT:
        return Move(S.OPT_OUT_CONTACT)
    if actor == Actor.WEBFORM:
        # A new submission with the box ticked is the contact's own fresh choice: it reopens
        # either opt-out. Double opt-in stays (never downgrade a stronger proof).
        return Move(current if current == S.DOUBLE_OPT_IN else S.SINGLE_OPT_IN_WEBFORM)
    if actor == Actor.DOUBLE_OPT_IN:
        if current in OPTED_OUT:
            raise TransitionForbidden(
                _("This person opted out after the confirmation was sent; a new sign-up is "
                  "needed."))
        return Move(S.DOUBLE_OPT_IN)
    if actor == Actor.STAFF:
        if wanted == S.OPT_OUT_USER:
            if current == S.OPT_OUT_CONTACT:
                return Move(current)
            return Move(S.OPT_OUT_USER)
        if current == S.OPT_OUT_CONTACT:
            raise TransitionForbidden(
                _("The contact opted out themselves; only a new web-form sign-up by the contact "
                  "can reopen email. Staff cannot reverse it."))
        if wanted == "reverse_opt_out" and current == S.OPT_OUT_USER:
            return Move("")  # resolved to the state before the opt-out by the service
        raise TransitionForbidden(
            _("Staff may opt a person out, or reverse a staff opt-out. Opt-ins come from the "
              "person (web form, double opt-in) or are set when the record is created."))
    raise ServiceError(_("Unknown actor."))


def staff_choices(current: str) -> list[tuple[str, str]]:
    """The moves a staff member may offer for a person at `current` (for the staff UI)."""
    if current == S.OPT_OUT_CONTACT:
        return []
    if current == S.OPT_OUT_USER:
        return [("reverse_opt_out", _("Reverse the staff opt-out"))]
    return [(S.OPT_OUT_USER, _("Opt out (on the person's request)"))]


_SOURCES = {Actor.STAFF: Source.STAFF, Actor.CONTACT: Source.PORTAL,
            Actor.WEBFORM: Source.WEBFORM, Actor.DOUBLE_OPT_IN: Source.DOUBLE_OPT_IN}


def _state_before_opt_out(person_id) -> str:
    last_out = (ConsentEvent.objects.filter(person_id=person_id, subject="email_opt_in",
                                            state=S.OPT_OUT_USER).order_by("-seq").first())
    previous = (last_out.evidence or {}).get("previous") if last_out else None
    return previous if previous in S.values and previous not in OPTED_OUT else S.NONE


def opt_in_change(*, person, actor: str, verified_by: str, wanted: str | None = None,
                  evidence: dict | None = None, user=None, note: str = "",
                  source: str | None = None, ip: str | None = None,
                  user_agent: str | None = None) -> Person:
    """Move a person's email opt-in status as `actor` asks, with a ledger event.

    Staff moves need `user` and a `note`. A stopped record refuses staff moves (the contact's own
    opt-out always goes through: it only reduces processing).
    """
    with transaction.atomic():
        ledger.lock_chain(person.pk)
        current = Person.objects.select_for_update().get(pk=person.pk)
        if actor == Actor.STAFF and current.processing_stopped_at is not None:
            raise ProcessingStopped(_("This person asked us to stop processing their data."))
        move = next_state(current.email_opt_in, actor=actor, wanted=wanted)
        state = move.state or _state_before_opt_out(current.pk)
        if state == current.email_opt_in:
            return current
        evidence = {**(evidence or {}), "previous": current.email_opt_in}
        if actor == Actor.STAFF:
            if not (note or "").strip() or user is None:
                raise ServiceError(_("Say why (a note is required)."), field="note")
            evidence.update(user_id=user.pk, note=note.strip()[:500])
        ledger.append(ConsentEvent(
            person_id=current.pk, purpose_version=None, subject="email_opt_in",
            action="opt_in_change", state=state, source=source or _SOURCES[actor],
            verified_by=verified_by, evidence=evidence,
            ip_hash=ledger.keyed_hash(ip, purpose="ip"),
            ua_hash=ledger.keyed_hash(user_agent, purpose="ua"), at=clock.now(),
        ))
        Person.objects.filter(pk=current.pk).update(email_opt_in=state, updated_at=clock.now())
        current.email_opt_in = state
    return current

