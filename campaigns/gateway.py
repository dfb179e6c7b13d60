"""The mail gateway: the one place that decides whether a message may go to a person.

`decide(person, kind)` answers for one person; `eligible_q(kind)` selects the same people in one
SQL query (audiences), and `recheck(ids, kind)` re-decides a batch from fresh data with one query
right before hand-off to SMTP. All three read the same rule table below.
"""

from dataclasses import dataclass
from types import SimpleNamespace

from django.core.validators import validate_email
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from consents.models import OptInAccepted
from consents.selectors import consent_settings
from crm.models import EmailOptIn, Person, SuppressedAddress
from crm.services import address_hash, address_hasher


class Kind:
    CAMPAIGN = "campaign"
    AUTORESPONDER = "autoresponder"
    WORKFLOW = "workflow"
    ADHOC = "adhoc"
    REPLY = "reply"
    SYSTEM = "system"
    DOUBLE_OPT_IN = "double_opt_in"  # the confirmation request itself
    # An invitation to the preference page (page enabled, a new purpose, a re-permission
    # request, staff sending one person their link): unsolicited, so every opt-out blocks it,
    # but it is not marketing, so the opt-in acceptance level does not.
    PORTAL_INVITE = "portal_invite"
    ALL = (CAMPAIGN, AUTORESPONDER, WORKFLOW, ADHOC, REPLY, SYSTEM, DOUBLE_OPT_IN, PORTAL_INVITE)


class Reason:
    ELIGIBLE = "eligible"
    OPT_IN_BELOW_ACCEPTED = "opt_in_below_accepted"
    OPTED_OUT_USER = "opted_out_user"
    OPTED_OUT_CONTACT = "opted_out_contact"
    PROCESSING_STOPPED = "processing_stopped"
    ERASED = "erased"
    SUPPRESSED = "suppressed"
    NO_VALID_ADDRESS = "no_valid_address"


# What each reason means, in words staff understand (pages show the code beside them).
REASON_TEXT = {
    Reason.ELIGIBLE: _("allowed"),
    Reason.OPT_IN_BELOW_ACCEPTED: _("their opt-in is below the level accepted for "
                                            "this kind of email"),
    Reason.OPTED_OUT_USER: _("they asked us not to email them (opt-out recorded by "
                                     "staff)"),
    Reason.OPTED_OUT_CONTACT: _("they opted out themselves"),
    Reason.PROCESSING_STOPPED: _("they asked us to stop processing their data"),
    Reason.ERASED: _("their personal data was erased"),
    Reason.SUPPRESSED: _("the address is on the suppression list"),
    Reason.NO_VALID_ADDRESS: _("there is no valid email address"),
}


# Which checks apply to which kind. Replies to the contact's own message and system mail that
# serves their rights (confirming a change they made) go despite opt-out and stop-processing.
OPT_OUT_APPLIES = {Kind.CAMPAIGN, Kind.AUTORESPONDER, Kind.WORKFLOW, Kind.ADHOC,
                   Kind.DOUBLE_OPT_IN, Kind.PORTAL_INVITE}
STOP_APPLIES = OPT_OUT_APPLIES
SUPPRESSION_APPLIES = OPT_OUT_APPLIES
ACCEPTANCE_APPLIES = {Kind.CAMPAIGN, Kind.WORKFLOW}
ACCEPTED = {
    OptInAccepted.DOUBLE: {EmailOptIn.DOUBLE_OPT_IN},
    OptInAccepted.DOUBLE_USER: {EmailOptIn.DOUBLE_OPT_IN, EmailOptIn.SINGLE_OPT_IN_USER},
    OptInAccepted.DOUBLE_USER_WEBFORM: {EmailOptIn.DOUBLE_OPT_IN, EmailOptIn.SINGLE_OPT_IN_USER,
                                        EmailOptIn.SINGLE_OPT_IN_WEBFORM},
}


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


def _valid(email: str) -> bool:
    if not email:
        return False
    try:
        validate_email(email)
    except Exception:  # noqa: BLE001 - any failure means "not a usable address"
        return False
    return True


def _check_kind(kind: str) -> None:
    if kind not in Kind.ALL:
        raise ValueError(f"Unknown message kind {kind!r}.")


def decide(person: Person, kind: str, *, accepted: str | None = None,
           suppressed: bool | None = None) -> Decision:
    """May a message of `kind` go to `person` now? The first rule that blocks gives the reason.

    `accepted` and `suppressed` may be passed by batch callers that already know them.
    """
    _check_kind(kind)
    if person.erased_at is not None:
        return Decision(False, Reason.ERASED)
    if not _valid(person.email):
        return Decision(False, Reason.NO_VALID_ADDRESS)
    if kind in SUPPRESSION_APPLIES:
        if suppressed is None:
            suppressed = SuppressedAddress.objects.filter(
                address_hash=address_hash(person.email)).exists()
        if suppressed:
            return Decision(False, Reason.SUPPRESSED)
    if kind in STOP_APPLIES and person.processing_stopped_at is not None:
        return Decision(False, Reason.PROCESSING_STOPPED)
    if kind in OPT_OUT_APPLIES:
        if person.email_opt_in == EmailOptIn.OPT_OUT_CONTACT:
            return Decision(False, Reason.OPTED_OUT_CONTACT)
        if person.email_opt_in == EmailOptIn.OPT_OUT_USER:
            return Decision(False, Reason.OPTED_OUT_USER)
    if kind in ACCEPTANCE_APPLIES:
        level = accepted or consent_settings().opt_in_accepted
        if person.email_opt_in not in ACCEPTED[level]:
            return Decision(False, Reason.OPT_IN_BELOW_ACCEPTED)
    return Decision(True, Reason.ELIGIBLE)


def reason_q(kind: str, *, accepted: str | None = None) -> dict[str, Q]:
    """For each blocking reason, the Q of people it blocks (in decide()'s order, each excluding
    the earlier ones is left to the caller). Suppression is handled by `recheck`/`audience`."""
    _check_kind(kind)
    level = accepted or consent_settings().opt_in_accepted
    reasons = {Reason.ERASED: Q(erased_at__isnull=False),
               Reason.NO_VALID_ADDRESS: Q(email="")}
    if kind in STOP_APPLIES:
        reasons[Reason.PROCESSING_STOPPED] = Q(processing_stopped_at__isnull=False)
    if kind in OPT_OUT_APPLIES:
        reasons[Reason.OPTED_OUT_CONTACT] = Q(email_opt_in=EmailOptIn.OPT_OUT_CONTACT)
        reasons[Reason.OPTED_OUT_USER] = Q(email_opt_in=EmailOptIn.OPT_OUT_USER)
    if kind in ACCEPTANCE_APPLIES:
        reasons[Reason.OPT_IN_BELOW_ACCEPTED] = ~Q(email_opt_in__in=ACCEPTED[level])
    return reasons


def eligible_q(kind: str, *, accepted: str | None = None) -> Q:
    """The people decide() allows, as one Q. Two parts stay with `recheck`: the suppression list
    (its keyed hashes cannot be computed inside the database) and address syntax (every write
    path validates addresses, so a stored address is valid or empty)."""
    blocked = Q(pk__in=[])
    for q in reason_q(kind, accepted=accepted).values():
        blocked |= q
    return ~blocked


def recheck(person_ids, kind: str) -> dict:
    """Re-decide a batch from fresh data right before sending: one query for the people, one
    for the suppression list. Returns person id → Decision (missing people: erased)."""
    _check_kind(kind)
    accepted = consent_settings().opt_in_accepted
    # What decide() reads, as plain records: a model instance per person cost more than the
    # decision.
    people = [SimpleNamespace(pk=pk, email=email, email_opt_in=state,
                              processing_stopped_at=stopped, erased_at=erased)
              for pk, email, state, stopped, erased in Person.objects.filter(
                  pk__in=list(person_ids)).values_list(
                  "pk", "email", "email_opt_in", "processing_stopped_at", "erased_at")]
    hasher = address_hasher()  # the key derived once for the batch
    hashes = {p.pk: hasher(p.email) for p in people if p.email}
    suppressed = set()
    if kind in SUPPRESSION_APPLIES and hashes:
        suppressed = set(SuppressedAddress.objects.filter(
            address_hash__in=hashes.values()).values_list("address_hash", flat=True))
    decisions = {p.pk: decide(p, kind, accepted=accepted,
                              suppressed=hashes.get(p.pk) in suppressed) for p in people}
    for missing in set(person_ids) - set(decisions):
        decisions[missing] = Decision(False, Reason.ERASED)
    return decisions


def is_reply(person, in_reply_to: str | None) -> bool:
    """A message is a reply only when it answers a message this person sent us."""
    from .models import InboundMessage

    return bool(in_reply_to) and InboundMessage.objects.filter(
        person=person, message_id=in_reply_to).exists()


def explain_email(person) -> dict:
    """The email section of the explain endpoint: every kind, allowed or not, and why."""
    accepted = consent_settings().opt_in_accepted
    suppressed = bool(person.email) and SuppressedAddress.objects.filter(
        address_hash=address_hash(person.email)).exists()
    return {kind: vars(decide(person, kind, accepted=accepted, suppressed=suppressed))
            for kind in Kind.ALL}


