"""The person service's bulk half: create people from a chunk of import rows.

Validation is `services.person_clean_values`, the same as for one person; this module adds
what a chunk needs to stay fast — one query to classify addresses, sealing without a query per
row, and COPY for people and their data keys. `crm.imports` (the file, the job and its progress)
is its only caller.
"""

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from config import clock
from config.pgcopy import CopyRows
from encryption.bulk import NewSubjectSealer, SealingHelper

from .models import FieldDefinition, Person
from .registry import ENCRYPTED_CORE
from .selectors import addresses_known
from .services import _seal_custom, person_clean_values


class ImportOutcome:
    CREATED = "created"
    DUPLICATE = "duplicate"
    STOPPED = "stopped"
    ERROR = "error"


@dataclass
class ImportChunkResult:
    created: int = 0
    duplicates: int = 0
    stopped: int = 0
    errors: list = field(default_factory=list)  # (line, {field: [messages]})
    outcomes: list | None = None  # dry runs: (line, outcome, {field: [messages]}, cleaned)

    def _tally(self, line: int, outcome: str, messages: dict | None = None,
               cleaned: dict | None = None) -> None:
        if outcome == ImportOutcome.ERROR:
            self.errors.append((line, messages))
        else:
            name = {"created": "created", "duplicate": "duplicates", "stopped": "stopped"}[outcome]
            setattr(self, name, getattr(self, name) + 1)
        if self.outcomes is not None:
            self.outcomes.append((line, outcome, messages or {}, cleaned or {}))


def person_import_chunk(
    *, rows: list[tuple[int, dict]], definitions: list[FieldDefinition], import_job_id=None,
    dry_run: bool = False,
) -> ImportChunkResult:
    """Create people from a chunk of import rows; an address already known is skipped.

    `rows` are (line number, data), data shaped as for `person_create`; `definitions` are the
    active custom fields, loaded once per file by the caller. Each row is validated by
    `person_clean_values`; then one query finds which addresses exist. A row whose address is
    held by a person (or by an earlier row) is skipped and counted — apart, when that person's
    processing is stopped — so an import never writes an existing record: no stopped record,
    no locked field. New people and their data keys are written in one transaction, with COPY
    on PostgreSQL; each person records `import_job_id`, the job that created them — the audit
    record of their creation (who, when, which file), instead of an audit row each. Run it
    inside the caller's transaction to commit progress with the rows. With `dry_run` nothing is
    written and `outcomes` says what would happen to each row (the staff preview).

    The two halves, `person_import_prepare` and `person_import_write`, let a caller prepare
    the next chunk while the database writes this one.
    """
    prepared = person_import_prepare(rows=rows, definitions=definitions,
                                     import_job_id=import_job_id, dry_run=dry_run)
    return prepared.result if dry_run else person_import_write(prepared)


@dataclass
class PreparedImport:
    """A validated and classified chunk, sealed or being sealed (`complete()` waits for it),
    for `person_import_write`."""

    rows: list
    definitions: list
    import_job_id: object
    result: ImportChunkResult
    new_emails: list
    people: CopyRows | None = None
    sealer: NewSubjectSealer | None = None
    pending: Callable | None = None  # fills in the sealed columns (see `complete`)

    def complete(self) -> "PreparedImport":
        """Collect what the sealing helper was doing for this chunk; before the write."""
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending()
        return self

    def save_keys(self) -> None:
        """Write this chunk's data keys now, on the calling thread's connection: outside a
        transaction they commit at once, before the people do — so a caller can write them
        while another connection writes the chunk before (`person_import_write` then has none
        left to write). Keys first is the safe order: a run that stops in between leaves
        keys that seal nothing, never a sealed value without its key."""
        self.complete()
        if self.sealer is not None:
            self.sealer.save_keys()


def person_import_prepare(
    *, rows: list[tuple[int, dict]], definitions: list[FieldDefinition], import_job_id=None,
    pending_emails=(), dry_run: bool = False, sealing_helper: SealingHelper | None = None,
) -> PreparedImport:
    """Validate, classify and seal a chunk without writing. `pending_emails` are addresses
    of chunks prepared but not committed yet (not visible here): they count as known. With a
    `sealing_helper` the sealing may still be under way: `complete()` collects it."""
    result = ImportChunkResult(outcomes=[] if dry_run else None)
    valid = []
    for line, data in rows:
        try:
            valid.append((line, person_clean_values(data, definitions=definitions)))
        except ValidationError as error:
            result._tally(line, ImportOutcome.ERROR, error.message_dict)
    known = addresses_known((c["email"] for _l, c in valid if c.get("email")),
                            "processing_stopped_at")
    new, seen = [], set(pending_emails)
    for line, cleaned in valid:
        email = cleaned.get("email")
        if email and (email in known or email in seen):
            result._tally(line, ImportOutcome.STOPPED if known.get(email)
                          else ImportOutcome.DUPLICATE, cleaned=cleaned)
            continue
        seen.add(email)
        new.append(cleaned)
        result._tally(line, ImportOutcome.CREATED, cleaned=cleaned)
    prepared = PreparedImport(rows=rows, definitions=definitions, import_job_id=import_job_id,
                              result=result,
                              new_emails=[c["email"] for c in new if c.get("email")])
    if not dry_run:
        prepared.people, prepared.sealer, prepared.pending = _people_rows(
            new, import_job_id=import_job_id, definitions=definitions, helper=sealing_helper)
        if sealing_helper is None:
            prepared.complete()
    return prepared


def person_import_write(prepared: PreparedImport, *, keys=None) -> ImportChunkResult:
    """Write a prepared chunk in one transaction (see `person_import_chunk`).

    `keys` is for a caller that has the chunk's data keys written on another connection
    (`PreparedImport.save_keys`): a future of that. The people are then written meanwhile and
    committed only after it — keys first."""
    prepared.complete()
    try:
        with transaction.atomic():
            if keys is None:
                prepared.sealer.save_keys()
            prepared.people.write()
            if keys is not None:
                keys.result()  # committed, or this chunk is not
    except IntegrityError:
        # Another writer took one of these addresses since the check: look again, once.
        again = person_import_prepare(rows=prepared.rows, definitions=prepared.definitions,
                                      import_job_id=prepared.import_job_id)
        again.complete()
        with transaction.atomic():
            again.sealer.save_keys()
            again.people.write()
        return again.result
    return prepared.result


def _people_rows(people: list[dict], *, import_job_id, definitions, helper=None):
    """The COPY rows of new people, and their sealer (whose keys are written with them). The
    encrypted core values are handed to the sealer first — to the `helper` process, if any —
    and the rest of the rows built meanwhile; the returned function fills in the sealed
    columns."""
    now = clock.now()
    sealed_custom = {d.key for d in definitions if d.is_encrypted}
    if sealed_custom and any(not sealed_custom.isdisjoint(c.get("custom") or {})
                             for c in people):
        helper = None  # custom values are sealed here, under the same key as the core ones
    sealer = NewSubjectSealer(helper=helper)
    rows = CopyRows(Person, now=now, defaults={"import_job_id": import_job_id})
    # The encrypted core fields, registered with the sealer in ENCRYPTED_CORE's order, and
    # their values: one list per field, aligned with `ids` ("" for none).
    for c in _ENCRYPTED_COLUMNS.values():
        sealer.field(context=c.context, mask_rule=c.mask_rule)
    columns = tuple([cleaned.get(name) or "" for cleaned in people] for name in ENCRYPTED_CORE)
    ids = _uuid7_texts(len(people))
    # Sealing binds each value to the row id, so the ids exist before the COPY. On PostgreSQL
    # each row's sealed columns are one slot, filled with one text per person.
    if not any(map(any, columns)):
        sealed = None  # no encrypted core value in this chunk
    elif rows.postgres:
        joined, texts = rows.join(*_SEALED_COLUMNS)
        absent = tuple(zip(*[iter(texts)] * 3, strict=True))  # per field: its three columns
        sealed = sealer.seal_new_subjects(ids, columns, absent=absent)
    else:
        sealed = sealer.seal_new_subjects(ids, columns)
    add = rows.keyed_adder(_COLUMN_OF)
    for pk, cleaned in zip(ids, people, strict=True):
        more = {f"{name}_id": cleaned[name].pk if cleaned[name] is not None else None
                for name in _RELATED if name in cleaned}
        custom = cleaned.get("custom")
        if custom:
            if not sealed_custom.isdisjoint(custom):
                custom = _seal_custom(custom, subject_id=pk, definitions=definitions,
                                      seal=sealer.seal)
            more["custom"] = custom
        add(cleaned, id=pk, **more)

    def fill_sealed():
        if sealed is None:
            return
        if rows.postgres:
            rows.fill_joined(joined, sealed.result())
            return
        slots = rows.slots(*_SEALED_COLUMNS)
        for position, values in enumerate(sealed.result()):
            if values is not None:
                rows.fill(position, slots, values)

    return rows, sealer, fill_sealed


def _uuid7_texts(count: int) -> list[str]:
    """Time-ordered (version 7, RFC 9562) UUIDs as text, in increasing order.

    A chunk's ids share a millisecond prefix and count up after it (a 26-bit counter in
    `rand_a` and the top of `rand_b`, 48 random bits after), so the indexes on the id (the
    people's, the data keys', and later those of rows that name a person) take each chunk at
    their right edge instead of on pages all over the tree: random (version 4) ids made every
    import row touch — and after a checkpoint, log whole — a page of each of those indexes. The
    ids reveal when a record was created, which its `created_at` shows anyway.
    """
    millis = f"{time.time_ns() // 1_000_000:012x}"
    head, tails = f"{millis[:8]}-{millis[8:]}-", os.urandom(6 * count).hex()
    return [f"{head}{0x7000 | i >> 14:04x}-{0x8000 | i & 0x3FFF:04x}-{tails[12 * i:12 * i + 12]}"
            for i in range(count)]


_RELATED = ("organisation", "owner")
_ENCRYPTED_COLUMNS = {name: Person._meta.get_field(name) for name in ENCRYPTED_CORE}
# Each encrypted core field's columns — its sealed value, mask and blind index — in the order the
# sealer gives them.
_SEALED_COLUMNS = tuple(column for name, c in _ENCRYPTED_COLUMNS.items()
                        for column in (name, c.mask_field, c.index_field))
# A cleaned value's column on the people row, for the fields that are copied as they are (not
# the related records, `custom`, or the sealed fields and theirs).
_COLUMN_OF = {f.name: f.attname for f in Person._meta.concrete_fields
              if f.name not in (*_RELATED, "custom", *_SEALED_COLUMNS)}
