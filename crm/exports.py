"""CSV export of people, streamed: masks only, never a decryption.

Sensitive values are exported as their stored masks (read from the mask columns; the sealed
columns are not even selected), sealed custom values as theirs (`display_custom`). Cells that a
spreadsheet would run as a formula are neutralised. Headers are field keys, so an export can be
mapped straight back into an import. People whose processing is stopped are left out: handing
their data to a spreadsheet is processing they restricted (GDPR Art. 18); erased tombstones
have nothing to export.
"""

import csv
import logging

from django.db.models import QuerySet
from django.http import StreamingHttpResponse

from config import clock

from .registry import custom_definitions, display_custom, encrypted_custom_rules

logger = logging.getLogger(__name__)

ROWS_PER_WRITE = 500
# Read straight from the columns; the masks stand in for the sealed values.
COLUMNS = [
    ("id", "id"), ("kind", "kind"), ("first_name", "first_name"), ("last_name", "last_name"),
    ("email", "email"), ("phone", "phone"), ("company", "company"),
    ("organisation", "organisation__name"), ("country", "country"), ("region", "region"),
    ("stage", "stage"), ("owner", "owner__username"), ("language", "language"),
    ("national_id", "national_id_mask"), ("card_number", "card_number_mask"),
    ("email_opt_in", "email_opt_in"), ("created_at", "created_at"), ("updated_at", "updated_at"),
]
# A cell starting with one of these is run as a formula by spreadsheet programs (CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value) -> str:
    """The cell's text, with a leading quote when a spreadsheet would read it as a formula."""
    if value is None:
        return ""
    if isinstance(value, bool):
        value = "true" if value else "false"
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def exportable(queryset: QuerySet) -> QuerySet:
    return queryset.filter(processing_stopped_at__isnull=True, erased_at__isnull=True)


def person_rows(queryset: QuerySet):
    """The header, then one list of cells per person, read in chunks (bounded memory)."""
    custom_keys = [d.key for d in custom_definitions()]
    encrypted = encrypted_custom_rules()
    yield [neutralise(name) for name, _source in COLUMNS] + [neutralise(k) for k in custom_keys]
    values = exportable(queryset).order_by("created_at", "id").values_list(
        *(source for _name, source in COLUMNS), "custom")
    for row in values.iterator(chunk_size=2000):
        custom = display_custom(row[-1], encrypted)
        yield [neutralise(v) for v in row[:-1]] + [neutralise(custom.get(k)) for k in custom_keys]


class _Echo:
    def write(self, value):
        return value


def csv_chunks(queryset: QuerySet):
    writer = csv.writer(_Echo(), lineterminator="\r\n")
    # The byte order mark tells spreadsheet programs the file is UTF-8 (the import skips it).
    batch = ["\ufeff"]
    for row in person_rows(queryset):
        batch.append(writer.writerow(row))
        if len(batch) == ROWS_PER_WRITE:
            yield "".join(batch)
            batch = []
    if batch:
        yield "".join(batch)


def csv_response(queryset: QuerySet, *, user=None) -> StreamingHttpResponse:
    """A streamed CSV download of `queryset` (already filtered and permission-checked)."""
    # Who exported, not what: the filters may hold personal data.
    logger.info("people export by %s", getattr(user, "pk", None))
    stamp = clock.now().strftime("%Y%m%d-%H%M%S")
    response = StreamingHttpResponse(csv_chunks(queryset), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="people-{stamp}.csv"'
    response["Cache-Control"] = "no-store"
    return response

