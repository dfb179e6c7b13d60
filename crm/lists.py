"""Marketing list membership in bulk: add a selection of people — ids, a queryset, or the emails
of a CSV — in one set-based statement, and say how many were skipped and why.

crm never compiles the rule language (consents does, above crm): a caller that selects by a
segment or a rule builds the queryset through `crm.extensions.person_filters` and passes it here.
Removing people is `crm.services.marketing_list_remove`.
"""

import json
import uuid
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import connection, transaction
from django.db.models import Count, Q, QuerySet
from django.utils.translation import gettext as _

from config import clock

from .imports import _check_header, _reader, _records, _upload_pieces
from .models import AuditEntry, ListMembership, MarketingList, Person
from .selectors import addresses_known
from .services import _audit, normalise_email

CSV_CHUNK_ROWS = 1000
AUDIT_ACTION = "list_add"
AUDIT_FIELDS = ["marketing_lists"]


@dataclass
class ListAddResult:
    added: int = 0
    already: int = 0  # members before, or named twice in one call
    skipped_stopped: int = 0
    skipped_erased: int = 0
    unknown: int = 0  # ids or emails that match no person
    errors: list = field(default_factory=list)  # CSV only: [{"line", "reason"}]

    def add(self, other: "ListAddResult") -> None:
        for name in ("added", "already", "skipped_stopped", "skipped_erased", "unknown"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors += other.errors

    def counts(self) -> dict:
        return {"added": self.added, "already": self.already,
                "skipped_stopped": self.skipped_stopped, "skipped_erased": self.skipped_erased,
                "unknown": self.unknown}


def parse_person_ids(values, *, field_name: str = "persons") -> list[uuid.UUID]:
    """Distinct UUIDs from `values`; ValidationError naming `field_name` on a malformed one."""
    try:
        return list(dict.fromkeys(uuid.UUID(str(value)) for value in values))
    except (TypeError, ValueError):
        raise ValidationError({field_name: [_("Each person is a UUID.")]}) from None


def list_add_people(
    *, marketing_list: MarketingList, person_ids=None, people: QuerySet | None = None,
    actor=None, source: str,
) -> ListAddResult:
    """Add `person_ids` or every person of the queryset `people` (exactly one) to the list.

    Idempotent. People whose processing is stopped are skipped and counted (adding to a list is
    processing); erased people are never put back on a list. One INSERT … SELECT does the work,
    with an audit row per person added, in one transaction.
    """
    if (person_ids is None) == (people is None):
        raise TypeError("Give person_ids or people, not both.")
    ids = None
    if person_ids is not None:
        ids = parse_person_ids(person_ids)
        people = Person.objects.filter(pk__in=ids)
    result = ListAddResult()
    if ids == []:
        return result
    with transaction.atomic():
        result.added = _insert_members(marketing_list, people, actor=actor, source=source)
        # Counted after the insert, whose row locks keep stop/erase from changing under us.
        counts = Person.objects.filter(pk__in=people.order_by().values("pk")).aggregate(
            total=Count("pk"),
            erased=Count("pk", filter=Q(erased_at__isnull=False)),
            stopped=Count("pk", filter=Q(erased_at__isnull=True,
                                         processing_stopped_at__isnull=False)),
        )
    result.skipped_erased = counts["erased"]
    result.skipped_stopped = counts["stopped"]
    result.already = max(0, counts["total"] - counts["erased"] - counts["stopped"] - result.added)
    if ids is not None:
        result.unknown = len(ids) - counts["total"]
    return result


def _insert_members(marketing_list, people: QuerySet, *, actor, source: str) -> int:
    """INSERT … SELECT the writable people of `people` not yet on the list; returns how many."""
    selection, selection_params = people.order_by().values("pk").query.sql_with_params()
    qn = connection.ops.quote_name
    person, membership = qn(Person._meta.db_table), qn(ListMembership._meta.db_table)
    postgres = connection.vendor == "postgresql"
    now = clock.now()
    # FOR SHARE: a stop of processing or an erasure committing meanwhile (both lock the row FOR
    # UPDATE) is waited for, and the row re-checked, so neither person lands on the list.
    # Table names are ours and the selection is compiled by the ORM (its values are parameters).
    insert = (
        f"INSERT INTO {membership} (marketing_list_id, person_id, added_at, source) "  # noqa: S608
        f"SELECT %s, p.id, %s, %s FROM {person} p "
        f"WHERE p.id IN ({selection}) AND p.processing_stopped_at IS NULL "
        f"AND p.erased_at IS NULL {'FOR SHARE OF p' if postgres else ''} "
        f"ON CONFLICT (marketing_list_id, person_id) DO NOTHING RETURNING person_id"
    )
    params = [marketing_list.pk, now, source, *selection_params]
    actor_id = actor.pk if getattr(actor, "pk", None) else None
    with connection.cursor() as cursor:
        if postgres:  # the audit rows in the same statement: nothing comes back to Python
            cursor.execute(
                f"WITH added AS ({insert}) "  # noqa: S608
                f"INSERT INTO {qn(AuditEntry._meta.db_table)} "
                f"(person_id, action, fields, actor_id, source, at) "
                f"SELECT person_id, %s, %s::jsonb, %s, %s, %s FROM added",
                [*params, AUDIT_ACTION, json.dumps(AUDIT_FIELDS), actor_id, source, now],
            )
            return cursor.rowcount
        cursor.execute(insert, params)  # SQLite (make run): the same insert, audit rows after
        added = [row[0] for row in cursor.fetchall()]
    AuditEntry.objects.bulk_create(
        (_audit(person_id=uuid.UUID(str(pk)), action=AUDIT_ACTION, fields=AUDIT_FIELDS,
                actor=actor, source=source) for pk in added),
        batch_size=1000,
    )
    return len(added)


def list_add_csv(*, marketing_list: MarketingList, file, actor=None, source: str) -> ListAddResult:
    """Add the people whose emails a CSV's `email` column lists (header on line 1).

    The file is read piece by piece. A malformed row, an invalid address or an address of no one
    is reported in `errors` with its line number while the good rows are added. A file that is
    not a UTF-8 CSV with an email column raises ValidationError({"file": …}) and adds no one.
    """
    records = _records(_reader(_upload_pieces(file)))
    first = next(records, None)
    if first is None:
        raise ValidationError({"file": [_("The file is empty.")]})
    header = [name.lower() for name in _check_header(first[1])]
    if "email" not in header:
        raise ValidationError({"file": [_("The first line must name an email column.")]})
    column = header.index("email")
    result = ListAddResult()
    with transaction.atomic():  # a file error half-way (not UTF-8) adds no one
        chunk = []
        for line, cells in records:
            if isinstance(cells, str):
                result.errors.append({"line": line, "reason": _("Malformed CSV: %(e)s.")
                                      % {"e": cells}})
                continue
            email = normalise_email(cells[column] if column < len(cells) else "")
            try:
                validate_email(email)
            except ValidationError:
                result.errors.append({"line": line, "reason": _("Not a valid email address.")})
                continue
            chunk.append((line, email))
            if len(chunk) == CSV_CHUNK_ROWS:
                result.add(_add_emails(marketing_list, chunk, actor=actor, source=source))
                chunk = []
        if chunk:
            result.add(_add_emails(marketing_list, chunk, actor=actor, source=source))
    result.errors.sort(key=lambda error: error["line"])
    return result


def _add_emails(marketing_list, rows, *, actor, source: str) -> ListAddResult:
    found = addresses_known((email for _line, email in rows), "id")
    ids, unknown = [], ListAddResult()
    for line, email in rows:
        if email in found:
            ids.append(found[email])
        else:
            unknown.unknown += 1
            unknown.errors.append({"line": line, "reason": _("No person has this email.")})
    result = list_add_people(marketing_list=marketing_list, person_ids=ids, actor=actor,
                             source=source)
    result.already += len(ids) - len(set(ids))  # the same address twice in the file
    result.add(unknown)
    return result


def marketing_list_delete(*, marketing_list: MarketingList) -> None:
    """Delete a list; its memberships go with it (the people stay)."""
    marketing_list.delete()
