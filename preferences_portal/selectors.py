"""What the preference page shows a contact, read in a few queries whatever the number of
consents and lists (the page must stay cheap: see bench/portal_load.py).

A person the admins' access rule does not admit (or anyone, while the page is disabled) sees
only the email preferences; `page_admits` is the one place that decides it.
"""

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings as conf
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import Count, Max, TextField
from django.db.models.expressions import RawSQL
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import get_language_info
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
# reused while the registry is unchanged (the shared stamp, or a cheap check of the registry).
_compiled: dict[tuple, object] = {}


class RuleBook:
    """Evaluates rules for one page view; the registry is checked once, whatever the rules.
    Give `stamp` (the shared stamp, which changes with the registry) when already read."""

    def __init__(self, stamp: str | None = None):
        self._stamp = stamp

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


# -- what every page shows alike ------------------------------------------------------------------

@dataclass(frozen=True)
class Shared:
    """The rows every page shows alike, as of `stamp` (see SharedStamp)."""

    stamp: str | None
    settings: object  # the portal settings row
    purpose_keys: dict  # id -> key, every purpose (rules name purposes by key)
    offered: list  # the latest text of each active purpose, in page order
    policies: list  # every policy version, newest first

    def policy_at(self, now) -> PolicyVersion | None:
        return next((p for p in self.policies if p.effective_at <= now), None)


_shared: Shared | None = None


def shared_rows(stamp: str | None) -> Shared:
    """The shared rows, from this process's memory while `stamp` (read by the caller in the
    same query as the person's own rows) is the one they were read at; else read afresh.
    Read after the stamp, they are at least as new as it: a stale copy can never be kept under
    a newer stamp."""
    global _shared
    kept = _shared
    if stamp is not None and kept is not None and kept.stamp == stamp:
        return kept
    latest: dict[int, ConsentPurposeVersion] = {}
    for version in (ConsentPurposeVersion.objects.filter(purpose__active=True)
                    .select_related("purpose").order_by("purpose_id", "-version")):
        latest.setdefault(version.purpose_id, version)
    fresh = Shared(
        stamp=stamp, settings=portal_settings(),
        purpose_keys=dict(ConsentPurpose.objects.values_list("id", "key")),
        offered=sorted(latest.values(), key=lambda v: (v.purpose.position, v.purpose.key)),
        policies=list(PolicyVersion.objects.order_by("-version")))
    if stamp is not None:
        _shared = fresh
    return fresh


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
    version_note: str = ""  # "Text version 2.", in the page's language

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

    @property
    def consent_fields(self) -> list[tuple[str, ConsentChoice]]:
        """(form field name, choice): the template names each consent's inputs by it."""
        return [(f"consent-{c.purpose.key}", c) for c in self.consents]

    @property
    def languages(self) -> list[tuple[str, str]]:
        """(code, name in that language) for the language switch."""
        return [(code, get_language_info(code)["name_local"]) for code, _name in conf.LANGUAGES]

    def consent(self, key: str) -> ConsentChoice | None:
        return next((c for c in self.consents if c.purpose.key == key), None)


def masked_address(email: str) -> str:
    """`g•••@example.org`: enough for the owner to recognise, little for someone else."""
    local, _at, domain = (email or "").partition("@")
    if not domain:
        return ""
    return f"{local[:1]}•••@{domain}"


@dataclass(frozen=True)
class Held:
    """A consent the person holds: its state, since when, and the text version it refers to."""

    state: str
    updated_at: datetime | None
    version: int | None


@dataclass(frozen=True)
class ListChoice:
    """A mailing list the person is on."""

    pk: int
    name: str
    description: str

    @property
    def value(self) -> str:
        """The id as the form sends it back (a string: an int would be localized each time)."""
        return str(self.pk)


def visible_consents(person: Person, consents: dict[str, Held], *, offered,
                     book: RuleBook | None = None) -> list[ConsentChoice]:
    """The offered purposes (latest texts of the active ones, in page order) whose visibility
    rule admits the person."""
    book = book or RuleBook()
    states = {key: c.state for key, c in consents.items()}
    note = _("Text version %(version)s.")  # translated once, not once per purpose
    choices = []
    for version in offered:
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
            answered_version=consent.version if consent else None,
            selected=selected, suggested=suggested,
            version_note=note % {"version": version.version}))
    return choices


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


# The person's own rows, read in the same query as the person (the page's cost is mostly round
# trips, and building this as ORM querysets cost three times what running it does). Rows are
# shaped (kind, ref, text, more, number, at): their consents (purpose id, state, -, text version,
# since), their lists (id, name, description), a change waiting for confirmation (rare: read in
# full only then), and the shared stamp with whether staff ever revealed their data (rare,
# likewise). Correlated to the person row of the outer query; aggregated into one JSON array
# (PostgreSQL and SQLite only differ in the two functions' names).
_OWN_ROWS = """
SELECT CAST({agg}({array}(kind, ref, text, more, number, at)) AS text) FROM (
SELECT 'consent' AS kind, c.purpose_id AS ref, c.state AS text, NULL AS more,
       v.version AS number, c.updated_at AS at
  FROM consents_consent c LEFT JOIN consents_consentpurposeversion v ON v.id = c.version_id
 WHERE c.person_id = crm_person.id
UNION ALL
SELECT 'list', l.id, l.name, l.description, NULL, NULL
  FROM crm_listmembership m JOIN crm_marketinglist l ON l.id = m.marketing_list_id
 WHERE m.person_id = crm_person.id
UNION ALL
SELECT 'pending', NULL, NULL, NULL, NULL, p.created_at
  FROM preferences_portal_pendingchange p
 WHERE p.person_id = crm_person.id AND p.state = %s AND p.expires_at >= %s
UNION ALL
SELECT 'stamp', NULL, s.value, NULL,
       CASE WHEN EXISTS (SELECT 1 FROM encryption_fieldaccesslog r
                          WHERE r.subject_id = crm_person.id) THEN 1 ELSE 0 END, NULL
  FROM preferences_portal_sharedstamp s
 WHERE s.id = 1) own
"""
_JSON_FUNCTIONS = {"postgresql": ("json_agg", "json_build_array"),
                   "sqlite": ("json_group_array", "json_array")}


def with_own_rows(people):
    """`people` with each one's own rows for the page (`page_rows`), in the same query: the
    preference page reads the person its link names this way (one round trip, not two)."""
    agg, array = _JSON_FUNCTIONS[connection.vendor]
    sql = _OWN_ROWS.format(agg=agg, array=array)
    now = connection.ops.adapt_datetimefield_value(clock.now())
    # A constant statement: every value is a parameter.
    return people.annotate(page_rows=RawSQL(  # noqa: S611
        sql, [PendingChange.State.PENDING, now], output_field=TextField()))


def _moment(value):
    # In JSON a time is text: ISO 8601 from PostgreSQL, the stored UTC text from SQLite.
    if isinstance(value, str):
        value = parse_datetime(value)
        if value is not None and timezone.is_naive(value):
            value = timezone.make_aware(value, UTC)
    return value


def _own_rows(person: Person) -> list:
    raw = getattr(person, "page_rows", None)
    if raw is None:
        raw = with_own_rows(Person.objects.filter(pk=person.pk)).values_list(
            "page_rows", flat=True).first()
    return [(kind, ref, text, more, number, _moment(at))
            for kind, ref, text, more, number, at in json.loads(raw or "[]")]


def page_for(person: Person) -> Page:
    """Everything the page shows, for a person the caller already identified by their link."""
    held_by_id, lists, stamp, pending, revealed = {}, [], None, False, False
    for kind, ref, text, more, number, at in _own_rows(person):
        if kind == "consent":
            held_by_id[ref] = Held(state=text, updated_at=at, version=number)
        elif kind == "list":
            lists.append(ListChoice(pk=ref, name=text, description=more or ""))
        elif kind == "pending":
            pending = True
        else:
            stamp, revealed = text, bool(number)
    shared = shared_rows(stamp)
    consents = {shared.purpose_keys[pk]: held for pk, held in held_by_id.items()
                if pk in shared.purpose_keys}
    lists.sort(key=lambda item: item.name)
    page = Page(person=person, full=False, lists=lists, settings=shared.settings,
                pending=pending_for(person) if pending else None)
    book = RuleBook(stamp)
    page.full = page_admits(person, consents={k: c.state for k, c in consents.items()},
                            settings=shared.settings, book=book)
    if not page.full:
        return page
    page.policy = shared.policy_at(clock.now())
    page.consents = visible_consents(person, consents, offered=shared.offered, book=book)
    page.reveals = reveals_of(person) if revealed else []
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
