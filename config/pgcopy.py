"""Bulk inserts through PostgreSQL's COPY: plumbing shared by the apps, no business rules.

`bulk_create` manages ~45k rows/s here and COPY ~600k; imports write through this. Callers own
validation, transactions and audit rows; this only turns values into COPY's text format (tab
separated, backslash escapes: a plain join, several times faster than the csv module on wide rows
of sealed values) and sends it. Other databases (SQLite under `make run`) fall back to
`bulk_create`.
"""

import datetime
import decimal
import io
import json
import re
import uuid

from django.db import connections

_SPECIAL = re.compile(r"[\\\t\n\r]")
_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
NULL = "\\N"


def _escape(text: str) -> str:
    """Text as COPY's text format reads it: backslash, tab, newline and CR escaped."""
    return _SPECIAL.sub(lambda m: _ESCAPES[m.group()], text) if _SPECIAL.search(text) else text


def _bytes(value) -> str:
    return "\\\\x" + bytes(value).hex()  # bytea hex input, its backslash escaped for COPY


def _json(value) -> str:
    return _escape(json.dumps(value, separators=(",", ":")))


_FORMATS = {
    bytes: _bytes, memoryview: _bytes, bool: lambda v: "t" if v else "f", dict: _json,
    list: _json, datetime.datetime: datetime.datetime.isoformat,
    datetime.date: datetime.date.isoformat, uuid.UUID: str, int: str, decimal.Decimal: str,
}


def copy_text(value) -> str:
    """One value as COPY's text format reads it (None is NULL)."""
    if value is None:
        return NULL
    if type(value) is str:  # the common case answered by two scans in C
        return value if value.isprintable() and "\\" not in value else _escape(value)
    if type(value) is bytes:
        return "\\\\x" + value.hex()
    format_ = _FORMATS.get(type(value))
    if format_ is not None:
        return format_(value)
    if hasattr(value, "pk"):
        return copy_text(value.pk)
    return _escape(str(value))


class CopyRows:
    """Rows for one model's table: every concrete column (the auto id and the columns the
    database fills, `db_default`, excepted), defaults filled.

    `add({attname: value, ...})` starts from the fields' defaults (auto_now fields get `now`;
    the `defaults` given override them), so a row lists only what differs. `write()` sends them
    with one COPY on PostgreSQL, or with `bulk_create` of model instances elsewhere, and clears
    the buffer.
    """

    def __init__(self, model, *, now: datetime.datetime, using: str = "default",
                 defaults: dict | None = None):
        self.model = model
        self.using = using
        self._defaults = dict(defaults or {})  # {attname: value}: every row's, unless set
        # A column with a database default (`db_default`) is left to it, unless in `defaults`.
        self.fields = [f for f in model._meta.concrete_fields
                       if not (f.primary_key and f.get_internal_type().endswith("AutoField"))
                       and not (f.has_db_default() and f.attname not in self._defaults)]
        self.index = {f.attname: i for i, f in enumerate(self.fields)}
        defaults = [
            self._defaults[f.attname] if f.attname in self._defaults
            else now if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)
            else (f.get_default() if f.has_default() or not f.null else None)
            for f in self.fields
        ]
        self._template = [copy_text(v) for v in defaults]
        self.postgres = connections[using].vendor == "postgresql"
        self._rows: list = []
        self._texts: list = []  # rows formatted elsewhere (`add_text`), and how many
        self._text_rows = 0

    def add(self, values: dict) -> None:
        if not self.postgres:
            self._rows.append(values)
            return
        row = self._template.copy()
        index = self.index
        for name, value in values.items():
            row[index[name]] = copy_text(value)
        self._rows.append(row)

    def keyed_adder(self, columns: dict):
        """A faster `add` for dicts keyed otherwise (a service's cleaned values): with `columns`
        mapping keys to attnames, `keyed_adder(columns)(values, id=…)` adds a row with the
        column of each key of `values` found in `columns` set — other keys are skipped — and
        then the columns named as keywords. Values are converted as by `add`."""
        if not self.postgres:
            def add_values(values: dict, **more) -> None:
                self._rows.append(
                    {columns[k]: v for k, v in values.items() if k in columns} | more)

            return add_values
        slot_of = {key: self.index[attname] for key, attname in columns.items()}
        template, append, index = self._template, self._rows.append, self.index

        def add(values: dict, **more) -> None:
            row = template.copy()
            for key, value in values.items():
                slot = slot_of.get(key)
                if slot is not None:  # copy_text's common case inline: a plain string
                    row[slot] = value if type(value) is str and value.isprintable() \
                        and "\\" not in value else copy_text(value)
            for name, value in more.items():
                row[index[name]] = copy_text(value)
            append(row)

        return add

    def line_template(self, *names: str, **values) -> str:
        """Rows alike but for `names`, as a `str.format` template of one line of COPY text:
        `line_template("a", "b", c=1).format(a_text, b_text)` is the line of a row of defaults
        with c set to 1 and a and b to the texts given (already in COPY's text format);
        `add_text` takes the lines. The template is a plain string, so another process (the
        sealing helper) can fill it too. PostgreSQL only."""
        if not self.postgres:
            raise ValueError("Rows in COPY's text format are for PostgreSQL.")
        row = self._template.copy()
        for name, value in values.items():
            row[self.index[name]] = copy_text(value)
        row = [cell.replace("{", "{{").replace("}", "}}") for cell in row]
        for number, slot in enumerate(self.slots(*names)):
            row[slot] = f"{{{number}}}"
        return "\t".join(row)

    def join(self, *names: str) -> tuple[int, tuple]:
        """Make the columns `names` one slot of every row, holding their COPY texts joined by
        tabs in this order — for values formatted together elsewhere (`fill_joined`). They go
        last in the COPY's column list and have no slot of their own (`add` cannot set them).
        PostgreSQL only, before any row is added. Returns the slot and the texts of their
        defaults, in order."""
        if not self.postgres or self._rows or self._texts:
            raise ValueError("Join columns on PostgreSQL, before adding rows.")
        defaults = dict(zip((f.attname for f in self.fields), self._template, strict=True))
        kept = [f for f in self.fields if f.attname not in names]
        self.fields = kept + [self.fields[self.index[name]] for name in names]
        absent = tuple(defaults[name] for name in names)
        self._template = [defaults[f.attname] for f in kept] + ["\t".join(absent)]
        self.index = {f.attname: i for i, f in enumerate(kept)}
        return len(kept), absent

    def fill_joined(self, slot: int, texts: list) -> None:
        """Set the joined slot (`join`) of every row added since the last write, in order."""
        for row, text in zip(self._rows, texts, strict=True):
            row[slot] = text

    def add_text(self, text: str, count: int) -> None:
        """`count` rows already in COPY's text format, one per line (PostgreSQL only)."""
        if not self.postgres:
            raise ValueError("Rows in COPY's text format are for PostgreSQL.")
        if count:
            self._texts.append(text)
            self._text_rows += count

    def slots(self, *names: str) -> tuple:
        """Where `fill` finds these columns: their positions in a row on PostgreSQL, their
        names elsewhere."""
        return tuple(self.index[name] for name in names) if self.postgres else names

    def fill(self, position: int, slots, values) -> None:
        """Set more columns (`slots`) of the row added `position`-th since the last write —
        values that were not ready when it was added: in COPY's text format on PostgreSQL, as
        they are elsewhere."""
        row = self._rows[position]
        for slot, value in zip(slots, values, strict=True):
            row[slot] = value

    def __len__(self):
        return len(self._rows) + self._text_rows

    def write(self) -> int:
        rows, self._rows = self._rows, []
        texts, self._texts, counted, self._text_rows = self._texts, [], self._text_rows, 0
        if not rows and not texts:
            return 0
        if not self.postgres:
            self.model._base_manager.using(self.using).bulk_create(
                [self.model(**self._defaults, **values) for values in rows]
            )
            return len(rows)
        # Sent as UTF-8 bytes: a StringIO of text holding any non-ASCII character (a mask's
        # bullets) widens it to four bytes a character, and each piece read from it is a new
        # string for psycopg2 to encode again.
        buffer = io.BytesIO(("\n".join([*map("\t".join, rows), *texts]) + "\n").encode())
        connection = connections[self.using]
        qn = connection.ops.quote_name
        sql = "COPY {} ({}) FROM STDIN".format(
            qn(self.model._meta.db_table), ", ".join(qn(f.column) for f in self.fields))
        with connection.cursor() as cursor:
            cursor.copy_expert(sql, buffer, 1 << 20)  # read size: fewer GIL round trips
        return len(rows) + counted
