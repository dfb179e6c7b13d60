"""Bulk inserts through PostgreSQL's COPY: plumbing shared by the apps, no business rules.

`bulk_create` manages ~45k rows/s here and COPY ~600k; imports write through this. Callers own
validation, transactions and audit rows; this only turns values into COPY's CSV input and sends
it. Other databases (SQLite under `make run`) fall back to `bulk_create`.
"""

import csv
import datetime
import decimal
import io
import json
import uuid

from django.db import connections


def _bytes(value) -> str:
    return "\\x" + bytes(value).hex()  # bytea hex input; a backslash is literal in CSV


def _json(value) -> str:
    return json.dumps(value, separators=(",", ":"))


_FORMATS = {
    bytes: _bytes, memoryview: _bytes, bool: lambda v: "t" if v else "f", dict: _json,
    list: _json, datetime.datetime: datetime.datetime.isoformat,
    datetime.date: datetime.date.isoformat, uuid.UUID: str, int: str, decimal.Decimal: str,
}


def copy_text(value) -> str | None:
    """One value as COPY's CSV reads it (None is NULL)."""
    if value is None or type(value) is str:
        return value
    format_ = _FORMATS.get(type(value))
    if format_ is not None:
        return format_(value)
    if hasattr(value, "pk"):
        return copy_text(value.pk)
    return str(value)


class CopyRows:
    """Rows for one model's table: every concrete column (the auto id excepted), defaults filled.

    `add({attname: value, ...})` starts from the fields' defaults (auto_now fields get `now`), so
    a row lists only what differs. `write()` sends them with one COPY on PostgreSQL, or with
    `bulk_create` of model instances elsewhere, and clears the buffer. The first column must
    never hold the bare text `\\.` (COPY's end marker): the models written here lead with a
    UUID or a generated value.
    """

    def __init__(self, model, *, now: datetime.datetime, using: str = "default"):
        self.model = model
        self.using = using
        self.fields = [f for f in model._meta.concrete_fields
                       if not (f.primary_key and f.get_internal_type().endswith("AutoField"))]
        self.index = {f.attname: i for i, f in enumerate(self.fields)}
        self.defaults = [
            now if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)
            else (f.get_default() if f.has_default() or not f.null else None)
            for f in self.fields
        ]
        self._template = [copy_text(v) for v in self.defaults]
        self.postgres = connections[using].vendor == "postgresql"
        self._rows: list = []

    def add(self, values: dict) -> None:
        if not self.postgres:
            self._rows.append(values)
            return
        row = self._template.copy()
        index = self.index
        for name, value in values.items():
            row[index[name]] = value if type(value) is str else copy_text(value)
        self._rows.append(row)

    def __len__(self):
        return len(self._rows)

    def write(self) -> int:
        rows, self._rows = self._rows, []
        if not rows:
            return 0
        if not self.postgres:
            self.model._base_manager.using(self.using).bulk_create(
                [self.model(**values) for values in rows]
            )
            return len(rows)
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(rows)
        buffer.seek(0)
        connection = connections[self.using]
        qn = connection.ops.quote_name
        # Empty unquoted values are NULL in COPY's CSV: NOT NULL columns read them as ''.
        not_null = [qn(f.column) for f in self.fields if not f.null]
        sql = "COPY {} ({}) FROM STDIN WITH (FORMAT csv{})".format(
            qn(self.model._meta.db_table), ", ".join(qn(f.column) for f in self.fields),
            f", FORCE_NOT_NULL ({', '.join(not_null)})" if not_null else "",
        )
        with connection.cursor() as cursor:
            cursor.copy_expert(sql, buffer, 1 << 20)  # read size: fewer GIL round trips
        return len(rows)
