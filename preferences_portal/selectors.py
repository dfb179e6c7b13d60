"""What the preference page shows a contact, read in a few queries whatever the number of
consents and lists (the page must stay cheap: see bench/portal_load.py).

A person the admins' access rule does not admit (or anyone, while the page is disabled) sees
only the email preferences; `page_admits` is the one place that decides it.
"""

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db.models import Count, Max
from django.utils.translation import gettext as _

from config import clock
from consents import rules
from consents.models import (
    Consent,
    ConsentPurpose,
    ConsentPurposeVersion,
    ConsentState,
    PolicyVersion,
)
from consents.selectors import portal_settings
from crm import extensions
from crm.models import EmailOptIn, FieldDefinition, MarketingList, Person
from encryption.models import FieldAccessLog

from .models import PendingChange

OPTED_OUT = (EmailOptIn.OPT_OUT_USER, EmailOptIn.OPT_OUT_CONTACT)
# Answers the page offers for a consent; "keep" leaves it as it is.
ANSWERS = (ConsentState.GRANTED, ConsentState.REVOKED)
REVEALS_SHOWN = 50


# Compiled rules, per process. Compiling reads the field registry and the purposes (two
# queries a rule), which would make the page's cost grow with every purpose; a compiled rule is
# reused while the registry is unchanged (one cheap query a page checks it).
_compiled: dict[tuple, object] = {}


class RuleBook:
    """Evaluates rules for one page view; the registry is checked once, whatever the rules."""

    def __init__(self):
        self._stamp = None

    def _predicate(self, rule):
        if self._stamp is None:
            self._stamp = tuple(FieldDefinition.objects.aggregate(
                changed=Max("updated_at"), count=Count("id")).values())
        key = (json.dumps(rule, sort_keys=True), self._stamp)
        if key not in _compiled:
            try:
                predicate = rules.to_predicate(rule)
            except ValidationError:
                return None  # not cached: the rule may fit once a field or purpose exists
            if len(_compiled) > 1000:
                _compiled.clear()
            _compiled[key] = predicate
        return _compiled[key]

    def matches(self, rule, person, consents) -> bool:
        if not rule:
            return True
        predicate = self._predicate(rule)
        # A rule that no longer fits (a field was deleted): fail closed, show less.
        return predicate is not None and predicate(person, consents)


def page_admits(person: Person, *, consents: dict | None = None, settings=None,
                book: RuleBook | None = None) -> bool:
    """May this person use the whole page (consents, rights), not only email preferences?"""
    settings = settings or portal_settings()
    if not settings.enabled:
        return False
    if consents is None and settings.access_rule:
        consents = _consent_states(person)
    return (book or RuleBook()).matches(settings.access_rule, person, consents or {})


def _consent_states(person) -> dict[str, str]:
    return dict(Consent.objects.filter(person=person).values_list("purpose__key", "state"))


@dataclass
class ConsentChoice:
    purpose: ConsentPurpose
    version: ConsentPurposeVersion
    state: str
    since: datetime | None
    answered_version: int | None
    # The answer pre-selected on the form: the current one, or the admins' suggestion while
    # the person never answered (a suggestion only: nothing is recorded until they confirm).
    selected: str
    suggested: bool

    @property
    def answered(self) -> bool:
        return self.state in ANSWERS

    @property
    def outdated(self) -> bool:
        """Granted to an older text than the one shown now."""
        return (self.state == ConsentState.GRANTED and self.answered_version is not None
                and self.answered_version < self.version.version)


@dataclass
class Page:
    person: Person
    full: bool
    lists: list = field(default_factory=list)
    policy: PolicyVersion | None = None
    consents: list = field(default_factory=list)
    pending: PendingChange | None = None
    reveals: list = field(default_factory=list)
    recipients: list = field(default_factory=list)
    settings: object = None  # the portal settings row the page was built with

    @property
    def opted_out(self) -> bool:
        return self.person.email_opt_in in OPTED_OUT

    @property
    def address(self) -> str:
        return masked_address(self.person.email)

    def consent(self, key: str) -> ConsentChoice | None:
        return next((c for c in self.consents if c.purpose.key == key), None)


def masked_address(email: str) -> str:
    """`g•••@example.org`: enough for the owner to recognise, little for someone else."""
    local, _at, domain = (email or "").partition("@")
    if not domain:
        return ""
    return f"{local[:1]}•••@{domain}"


def visible_consents(person: Person, consents: dict[str, Consent], *,
                     book: RuleBook | None = None) -> list[ConsentChoice]:
    """Active purposes with a published text whose visibility rule admits the person."""
    book = book or RuleBook()
    states = {key: c.state for key, c in consents.items()}
    latest: dict[int, ConsentPurposeVersion] = {}
    for version in (ConsentPurposeVersion.objects.filter(purpose__active=True)
                    .select_related("purpose").order_by("purpose_id", "-version")):
        latest.setdefault(version.purpose_id, version)
    choices = []
    for version in sorted(latest.values(), key=lambda v: (v.purpose.position, v.purpose.key)):
        purpose = version.purpose
        if not book.matches(purpose.visibility_rule, person, states):
            continue
        consent = consents.get(purpose.key)
        state = consent.state if consent else ConsentState.UNKNOWN
        suggested = state not in ANSWERS and purpose.default_selected
        selected = state if state in ANSWERS else (ConsentState.GRANTED if suggested else "")
        choices.append(ConsentChoice(
            purpose=purpose, version=version, state=state,
            since=consent.updated_at if consent and state in ANSWERS else None,
            answered_version=consent.version.version if consent and consent.version else None,
            selected=selected, suggested=suggested))
    return choices


def current_policy() -> PolicyVersion | None:
    return (PolicyVersion.objects.filter(effective_at__lte=clock.now())
            .order_by("-version").first())


def pending_for(person: Person) -> PendingChange | None:
    """The change waiting for the person's confirmation, if its link still works."""
    return (PendingChange.objects.filter(person=person, state=PendingChange.State.PENDING,
                                         expires_at__gte=clock.now())
            .order_by("-created_at").first())


def reveals_of(person: Person) -> list[dict]:
    """When staff revealed the person's sensitive fields: the role and the date, not who."""
    rows = list(FieldAccessLog.objects.filter(subject_id=person.pk)
                .order_by("-at").values("at", "role", "field")[:REVEALS_SHOWN])
    if not rows:
        return []
    labels = dict(FieldDefinition.objects.filter(key__in={r["field"] for r in rows})
                  .values_list("key", "label"))
    return [{"at": r["at"], "role": r["role"] or _("Staff"),
             "field": labels.get(r["field"], r["field"].replace("_", " ").capitalize())}
            for r in rows]


def recipients_of(person: Person) -> list[dict]:
    """Partners that received the person's data, from every app that registered a source."""
    found = []
    for source in extensions.data_recipients.values():
        found.extend(source(person.pk) or [])
    return found


def page_for(person: Person) -> Page:
    """Everything the page shows, for a person the caller already identified by their link."""
    settings = portal_settings()
    lists = list(MarketingList.objects.filter(listmembership__person=person).order_by("name"))
    page = Page(person=person, full=False, lists=lists, pending=pending_for(person),
                settings=settings)
    consents = {c.purpose.key: c for c in
                Consent.objects.filter(person=person).select_related("purpose", "version")}
    book = RuleBook()
    page.full = page_admits(person, consents={k: c.state for k, c in consents.items()},
                            settings=settings, book=book)
    if not page.full:
        return page
    page.policy = current_policy()
    page.consents = visible_consents(person, consents, book=book)
    page.reveals = reveals_of(person)
    page.recipients = recipients_of(person)
    return page


def _titles(changes: dict) -> dict[tuple[str, int], str]:
    """(purpose key, version) → the title the contact read, for the consents in a change."""
    wanted = {**changes.get("consents", {}), **changes.get("suggested", {})}
    if not wanted:
        return {}
    rows = ConsentPurposeVersion.objects.filter(purpose__key__in=list(wanted)).values_list(
        "purpose__key", "version", "title")
    return {(key, version): title for key, version, title in rows}


def change_summary(changes: dict) -> list[str]:
    """The change in words, one line per choice, in the active language (page, email, and the
    confirmation page say the same). Consents are named by the title the contact read."""
    lines = []
    if changes.get("processing") == "resume":
        lines.append(_("Resume processing of my data"))
    titles = _titles(changes)
    for key, wanted in changes.get("consents", {}).items():
        template = (_("Give my consent: %(name)s (text version %(version)s)")
                    if wanted["state"] == ConsentState.GRANTED
                    else _("Withdraw my consent: %(name)s"))
        lines.append(template % {"name": titles.get((key, wanted["version"]), key),
                                 "version": wanted["version"]})
    accepted = changes.get("suggested_accepted")
    for key, wanted in changes.get("suggested", {}).items():
        name = titles.get((key, wanted["version"]), key)
        if accepted is None:
            lines.append(_("Our suggestion, for you to accept or not when you confirm: give my "
                           "consent to %(name)s") % {"name": name})
        elif key in accepted:
            lines.append(_("Give my consent: %(name)s (text version %(version)s)")
                         % {"name": name, "version": wanted["version"]})
    if changes.get("lists_leave"):
        for name in (MarketingList.objects.filter(pk__in=changes["lists_leave"])
                     .order_by("name").values_list("name", flat=True)):
            lines.append(_("Leave the mailing list: %(name)s") % {"name": name})
    if changes.get("opt_out"):
        lines.append(_("Stop all marketing email to me"))
    if changes.get("processing") == "stop":
        lines.append(_("Stop processing my data (restriction)"))
    if changes.get("erasure"):
        lines.append(_("Erase my personal data"))
    if changes.get("access"):
        lines.append(_("Give me a copy of my data to download"))
    return lines


def suggestions(changes: dict) -> list[dict]:
    """The admins' suggestions a change carries, for the confirmation page to ask about."""
    titles = _titles(changes)
    return [{"key": key, "title": titles.get((key, wanted["version"]), key)}
            for key, wanted in changes.get("suggested", {}).items()]


def expired(change: PendingChange) -> bool:
    """Valid up to and including `expires_at`, not a moment after."""
    return clock.now() > change.expires_at


def download_open(change: PendingChange) -> bool:
    """A confirmed "Download my data" can be downloaded for as long as a link stays valid."""
    hours = portal_settings().confirmation_hours
    return (change.state == PendingChange.State.APPLIED and bool(change.changes.get("access"))
            and change.applied_at is not None
            and clock.now() <= change.applied_at + timedelta(hours=hours))
