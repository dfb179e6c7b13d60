"""Reads of people: the filters shared by the API (and, later, segments and exports)."""

from dataclasses import dataclass
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils.translation import gettext as _

from encryption.blind_index import blind_index, normalise
from encryption.cipher import DecryptionError
from encryption.values import open_value

from .extensions import person_filters
from .models import AuditEntry, EmailOptIn, ImportJob, Kind, Person, Region, Stage
from .registry import ENCRYPTED_CORE, encrypted_custom_rules
from .services import Source, normalise_email

_BOOL = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _choice(name, value, choices):
    if value not in choices:
        raise ValidationError({name: [_("Choose one of: %(c)s.") % {"c": ", ".join(choices)}]})
    return value


def _bool(name, value):
    try:
        return _BOOL[value.lower()]
    except KeyError:
        raise ValidationError({name: [_("Use true or false.")]}) from None


def person_filter(params, queryset: QuerySet | None = None) -> QuerySet:
    """Narrow people by the documented filters; a malformed value raises ValidationError.

    `params` is a mapping of filter name to string (a query string). Unknown names are ignored
    so that pagination and format parameters pass through.
    """
    qs = Person.objects.all() if queryset is None else queryset
    nul = sorted(name for name, value in params.items()
                 if isinstance(value, str) and "\x00" in value)
    if nul:  # PostgreSQL refuses it in any text
        raise ValidationError({name: [_("Remove the null character.")] for name in nul})
    if value := params.get("kind"):
        qs = qs.filter(kind=_choice("kind", value, Kind.values))
    if value := params.get("stage"):
        qs = qs.filter(stage=_choice("stage", value, Stage.values))
    if value := params.get("region"):
        qs = qs.filter(region=_choice("region", value, Region.values))
    if value := params.get("owner"):
        if value == "none":
            qs = qs.filter(owner__isnull=True)
        elif value.isdigit():
            qs = qs.filter(owner_id=int(value))
        else:
            raise ValidationError({"owner": [_("Use a user id or 'none'.")]})
    if value := params.get("email"):
        qs = qs.filter(email=normalise_email(value))
    if value := params.get("email_opt_in"):
        states = [_choice("email_opt_in", v.strip(), EmailOptIn.values) for v in value.split(",")]
        qs = qs.filter(email_opt_in__in=states)
    if value := params.get("processing_stopped"):
        qs = qs.filter(processing_stopped_at__isnull=not _bool("processing_stopped", value))
    if value := params.get("erasure_requested"):
        qs = qs.filter(erasure_requested_at__isnull=not _bool("erasure_requested", value))
    if value := params.get("search"):
        qs = qs.filter(person_search_q(value))
    for name, apply in person_filters.items():  # filters added by higher apps (consent, …)
        if value := params.get(name):
            qs = apply(qs, value)
    return qs


def people_with_addresses(emails) -> QuerySet:
    """The people whose (normalised) address is among `emails`. It states that the address is
    not empty so that PostgreSQL can use the partial unique index for lists of any length (it
    proves an IN list implies the index's condition only up to 100 values). For thousands of
    addresses at once, `addresses_known` is the faster lookup."""
    return Person.objects.filter(email__in=set(emails)).exclude(email="").order_by()


def addresses_known(emails, column: str) -> dict:
    """{address: that person's `column`} for the people whose (normalised) address is among
    `emails`: the batch lookup of imports and list uploads (a chunk of 5,000 addresses).

    On PostgreSQL it is one array parameter, not thousands (the ORM prepares each of an IN
    list's values in Python: ~10 ms a chunk), and it probes the unique address index for each
    address. The planner would rather hash the list and scan the table — its estimate for a big
    array — which is what an import into a young table gets, its statistics not yet caught up:
    45 ms a chunk at 100,000 people and growing with the table, where the probes take ~8 ms."""
    emails = list(set(emails))
    field = Person._meta.get_field(column)
    if connection.vendor != "postgresql":
        return dict(people_with_addresses(emails).values_list("email", column))
    qn = connection.ops.quote_name
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan TO off")
        sql = (f"SELECT email, {qn(field.column)} FROM {qn(Person._meta.db_table)} "  # noqa: S608
               "WHERE email = ANY(%s) AND NOT email = ''")
        cursor.execute(sql, [emails])
        found = cursor.fetchall()
        # Rolled back (a read: nothing else to undo), so the setting ends here even inside a
        # caller's transaction, where it would otherwise last until that commits.
        transaction.set_rollback(True)
    return {email: field.to_python(value) for email, value in found}


def person_search_q(value: str) -> Q:
    """Search names, email, company, the exposed characters of masked fields (core and
    encrypted custom ones), and (exactly) full sensitive identifiers through their blind
    index."""
    masks = [f"custom__{key}__mask__icontains" for key in encrypted_custom_rules()
             if "__" not in key]  # a key with "__" cannot be a lookup path
    query = Q()
    for term in value.split()[:5]:
        term_q = (
            Q(first_name__icontains=term) | Q(last_name__icontains=term)
            | Q(email__icontains=term) | Q(company__icontains=term)
            | Q(national_id_mask__icontains=term) | Q(card_number_mask__icontains=term)
        )
        for lookup in masks:
            term_q |= Q(**{lookup: term})
        query &= term_q
    exact = [pk for name in ENCRYPTED_CORE for pk in find_by_identifier(name, value)]
    return query | Q(pk__in=exact) if exact else query


def find_by_identifier(field: str, value: str) -> list:
    """Ids of people whose sensitive `field` equals `value` (blind index, then re-checked)."""
    if field not in ENCRYPTED_CORE or len(normalise(value)) < 4:
        return []
    context = f"crm.person.{field}"
    candidates = Person.objects.filter(
        **{f"{field}_bidx": blind_index(value, context=context)}
    ).only("pk", field)[:50]
    found = []
    for person in candidates:
        try:
            plain = open_value(getattr(person, field).blob, subject_id=person.pk,
                               context=context)
        except DecryptionError:
            continue  # shredded (erased) or unreadable: not a match
        if normalise(plain) == normalise(value):
            found.append(person.pk)
    return found


@dataclass(frozen=True)
class HistoryEntry:
    """One step of a person's history: field names, never values."""

    at: datetime
    action: str
    fields: list
    actor: object  # the staff user, or None
    source: str
    import_job: ImportJob | None = None


def person_history(person: Person, *, limit: int | None = None) -> list[HistoryEntry]:
    """What was done to a person's record, newest first (the first `limit` steps): their audit
    trail and, for a person an import created, that creation. An import writes no audit row per
    person — the job is its record (who ran it, when, which file) and the person names the job
    (`Person.import_job`) — so the step is made here from both, its fields those the import's
    mapping could fill."""
    entries = AuditEntry.objects.filter(person_id=person.pk).select_related("actor")
    steps = [HistoryEntry(e.at, e.action, e.fields, e.actor, e.source)
             for e in (entries[:limit] if limit is not None else entries)]
    if person.import_job_id and (limit is None or len(steps) < limit):
        job = ImportJob.objects.select_related("created_by").filter(
            pk=person.import_job_id).first()
        steps.append(HistoryEntry(
            person.created_at, "create", sorted(set(job.mapping.values())) if job else [],
            job.created_by if job else None, Source.IMPORT, job))
    return steps
