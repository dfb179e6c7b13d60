"""What the preference page shows a contact, read in one query whatever the number of consents,
lists and rules (the page must stay cheap: see bench/portal_load.py): the person the link names
with their own rows (`with_own_rows`), while what every page shows alike is kept per process
and checked against the shared stamp read in that same query (`shared_rows`). On PostgreSQL
that query is compiled once per process and prepared once per connection (`page_people`).

A person the admins' access rule does not admit (or anyone, while the page is disabled) sees
only the email preferences; `page_admits` is the one place that decides it.
"""

import functools
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings as conf
from django.core.exceptions import ValidationError
from django.db import connection, connections
from django.db.models import BooleanField, CharField, Count, Max, TextField
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
    version_numbers: dict  # purpose version id -> its number, every version
    lists: dict  # id -> ListChoice, every mailing list
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
        version_numbers=dict(ConsentPurposeVersion.objects.values_list("id", "version")),
        lists={pk: ListChoice(pk=pk, name=name, description=description) for pk, name, description
               in MarketingList.objects.values_list("id", "name", "description")},
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
# trips and query planning; building these as ORM subqueries cost more than running them). Each
# is a plain subquery correlated to the outer person row; names, texts and version numbers come
# from the shared rows. PostgreSQL and SQLite differ only in the JSON functions' names.
_OWN_ROWS = {
    # [[purpose id, state, version id, since], ...]
    "page_consents": ("SELECT CAST({agg}({array}(c.purpose_id, c.state, c.version_id, "
                      "c.updated_at)) AS text) FROM consents_consent c "
                      "WHERE c.person_id = crm_person.id", TextField),
    # [list id, ...]
    "page_lists": ("SELECT CAST({agg}(m.marketing_list_id) AS text) FROM crm_listmembership m "
                   "WHERE m.person_id = crm_person.id", TextField),
    # Staff revealed some of their data (rare: then read in full).
    "page_revealed": ("EXISTS (SELECT 1 FROM encryption_fieldaccesslog r "
                      "WHERE r.subject_id = crm_person.id)", BooleanField),
    "page_stamp": ("SELECT s.value FROM preferences_portal_sharedstamp s WHERE s.id = 1",
                   CharField),
}
# A change waiting for confirmation (rare: then read in full).
_PENDING = ("EXISTS (SELECT 1 FROM preferences_portal_pendingchange p "
            "WHERE p.person_id = crm_person.id AND p.state = %s AND p.expires_at >= %s)")
_JSON_FUNCTIONS = {"postgresql": ("json_agg", "json_build_array"),
                   "sqlite": ("json_group_array", "json_array")}


def with_own_rows(people, *, now=None):
    """`people` with each one's own rows for the page (`page_consents`, `page_lists`,
    `page_pending`, `page_revealed`, `page_stamp`), in the same query: the preference page reads
    the person its link names this way (one round trip, not several)."""
    now = connection.ops.adapt_datetimefield_value(now or clock.now())
    pending = RawSQL(_PENDING, [PendingChange.State.PENDING, now],  # noqa: S611 - parameters
                     output_field=BooleanField())
    return people.annotate(**_own_rows_sql(connection.vendor), page_pending=pending)


def page_people():
    """What to read the person a page link names from (`person_for_token(..., people=)`):
    `with_own_rows(Person.objects)`, and on PostgreSQL the same query as a statement prepared
    once per database connection (compiling and planning it cost more than running it)."""
    if connection.vendor == "postgresql":
        return _PreparedPerson.instance()
    return with_own_rows(Person.objects)


class _PreparedPerson:
    """`with_own_rows(Person.objects).get(pk=...)` as `EXECUTE` of a statement prepared per
    connection: the SQL, and what turns its row into a Person, are built once per process by
    the ORM itself (same columns, converters and annotations as the queryset)."""

    NAME = "preferences_portal_page_person"
    # Stand-ins for the two values that change between calls, found among the parameters.
    _NOW = datetime(2000, 1, 1, tzinfo=UTC)
    _PK = uuid.UUID(int=0)

    _instance = None

    @classmethod
    def instance(cls) -> "_PreparedPerson":
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def __init__(self):
        queryset = with_own_rows(Person.objects, now=self._NOW).filter(pk=self._PK)
        compiler = queryset.query.get_compiler(using=queryset.db)
        sql, params = compiler.as_sql()
        numbers = iter(range(1, len(params) + 1))
        # Django's placeholders to PostgreSQL's numbered ones (`%%` is a literal percent sign).
        self.prepare = f"PREPARE {self.NAME} AS " + re.sub(
            r"%([%s])", lambda m: "%" if m.group(1) == "%" else f"${next(numbers)}", sql)
        self.execute = f"EXECUTE {self.NAME}({', '.join(['%s'] * len(params))})"
        self.params = params
        self.using = queryset.db
        columns = compiler.select[:compiler.col_count]
        self.converters = tuple(compiler.get_converters([column[0] for column in columns]).items())
        fields = compiler.klass_info["select_fields"]
        self.model_slice = slice(fields[0], fields[-1] + 1)
        self.init_list = [column[0].target.attname for column in columns[self.model_slice]]
        self.annotations = tuple(compiler.annotation_col_map.items())

    def get(self, *, pk) -> Person:
        """Like `QuerySet.get(pk=pk)`: the person, or Person.DoesNotExist."""
        conn = connections[self.using]
        now = conn.ops.adapt_datetimefield_value(clock.now())
        pk = Person._meta.pk.get_db_prep_value(pk, conn)
        params = [now if value == self._NOW else pk if value == self._PK else value
                  for value in self.params]
        with conn.cursor() as cursor:
            # A prepared statement lives as long as its session (a rollback keeps it).
            if getattr(conn, "_page_person_prepared", None) is not conn.connection:
                cursor.execute(self.prepare)
                conn._page_person_prepared = conn.connection
            cursor.execute(self.execute, params)
            row = cursor.fetchone()
        if row is None:
            raise Person.DoesNotExist
        row = list(row)
        for position, (converters, expression) in self.converters:
            for converter in converters:
                row[position] = converter(row[position], expression, conn)
        person = Person.from_db(self.using, self.init_list, row[self.model_slice])
        for name, position in self.annotations:
            setattr(person, name, row[position])
        return person


@functools.cache
def _own_rows_sql(vendor: str) -> dict:
    # Constant statements without parameters, built once per process.
    agg, array = _JSON_FUNCTIONS[vendor]
    return {name: RawSQL(sql.format(agg=agg, array=array), [], output_field=field())  # noqa: S611
            for name, (sql, field) in _OWN_ROWS.items()}


def _moment(value):
    # In JSON a time is text: ISO 8601 from PostgreSQL, the stored UTC text from SQLite.
    if isinstance(value, str):
        value = parse_datetime(value)
        if value is not None and timezone.is_naive(value):
            value = timezone.make_aware(value, UTC)
    return value


def page_for(person: Person) -> Page:
    """Everything the page shows, for a person the caller already identified by their link
    (read with `with_own_rows`, or it is read again here)."""
    if not hasattr(person, "page_stamp"):
        person = with_own_rows(Person.objects.all()).get(pk=person.pk)
    shared = shared_rows(person.page_stamp)
    consents = {}
    for purpose_id, state, version_id, since in json.loads(person.page_consents or "[]"):
        if purpose_id in shared.purpose_keys:
            consents[shared.purpose_keys[purpose_id]] = Held(
                state=state, updated_at=_moment(since),
                version=shared.version_numbers.get(version_id))
    lists = sorted((shared.lists[pk] for pk in json.loads(person.page_lists or "[]")
                    if pk in shared.lists), key=lambda item: item.name)
    page = Page(person=person, full=False, lists=lists, settings=shared.settings,
                pending=pending_for(person) if person.page_pending else None)
    book = RuleBook(person.page_stamp)
    page.full = page_admits(person, consents={k: c.state for k, c in consents.items()},
                            settings=shared.settings, book=book)
    if not page.full:
        return page
    page.policy = shared.policy_at(clock.now())
    page.consents = visible_consents(person, consents, offered=shared.offered, book=book)
    page.reveals = reveals_of(person) if person.page_revealed else []
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
