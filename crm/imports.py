"""CSV import of people: upload, column mapping, preview, and the background run with progress.

The rules — validation, dedupe by address, the record lock, encryption — are the person
service's (`person_import.person_import_chunk`). This module reads the file as a stream, maps its
columns to fields, and keeps the job's state and counters; it is the only writer of `ImportJob`
and `ImportFileBlock`. The uploaded file is sealed at rest (it holds plaintext identifiers) and
shredded when the run ends.
"""

import codecs
import collections
import csv
import gc
import io
import itertools
import logging
import subprocess
import sys
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from django.core.exceptions import ValidationError
from django.db import InterfaceError, OperationalError, connection, connections, transaction
from django.utils.translation import gettext as _

from config import clock
from encryption.bulk import SealingHelper, SealingHelperError
from encryption.datakeys import destroy_data_key
from encryption.masking import DEFAULT_RULE, mask
from encryption.values import open_value, seal_value

from . import person_import
from .models import FieldDefinition, ImportFileBlock, ImportJob, Person
from .registry import ENCRYPTED_CORE, custom_definitions

logger = logging.getLogger(__name__)

# Rows per chunk, each committed with the job's progress: at 2,000 an encrypted import ran
# ~10 % slower (a hand-over between preparer, sealing helper and writer per chunk); past
# 5,000 only memory grows (bench/import_people.py).
CHUNK_ROWS = 5000
PREVIEW_ROWS = 20
BLOCK_CHARS = 1 << 20
# How long the preparing thread may keep the GIL while the writer thread waits for it (Python's
# default is 5 ms): see `_switch_interval_shortened`.
WRITER_SWITCH_INTERVAL = 0.001
# A run with at least this many rows left and encrypted core columns seals in a helper process.
SEALING_HELPER_ROWS = 10_000
MAX_UPLOAD_BYTES = 200 * 2**20
FILE_CONTEXT = "crm.importjob.file"
# Core fields an import may fill: what staff may set on create. Organisation and owner are
# references, not text a spreadsheet holds reliably; they are set afterwards in bulk.
CORE_FIELDS = (
    "kind", "first_name", "last_name", "email", "phone", "company", "country", "region", "stage",
    "language", "email_opt_in", "national_id", "card_number",
)
State = ImportJob.State


def importable_fields(definitions: list[FieldDefinition] | None = None) -> dict[str, str]:
    """Field key → label of everything a column may be mapped to."""
    if definitions is None:
        definitions = custom_definitions()
    core = {name: str(Person._meta.get_field(name).verbose_name) for name in CORE_FIELDS}
    for name in ENCRYPTED_CORE:
        core[name] = str(Person._meta.get_field(f"{name}_mask").verbose_name)
    return core | {d.key: d.label for d in definitions}


def default_mapping(header: list[str], fields) -> dict[str, str]:
    """Columns whose name is a field key (case and spaces aside) map to that field."""
    mapping, taken = {}, set()
    for column in header:
        key = column.strip().lower()
        if key in fields and key not in taken:
            mapping[column] = key
            taken.add(key)
    return mapping


def clean_mapping(mapping, *, header: list[str], fields) -> dict[str, str]:
    """Check a column → field mapping against the file and the registry (ValidationError)."""
    if not isinstance(mapping, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
    ):
        raise ValidationError({"mapping": [_("Send an object of column name to field key.")]})
    errors, cleaned, taken = [], {}, {}
    for column, key in mapping.items():
        if not key:
            continue  # a column left unmapped is ignored
        if column not in header:
            errors.append(_("The file has no column %(column)s.") % {"column": column})
        elif key not in fields:
            errors.append(_("%(key)s is not a field an import can fill.") % {"key": key})
        elif key in taken:
            errors.append(_("%(key)s is mapped from both %(a)s and %(b)s.")
                          % {"key": key, "a": taken[key], "b": column})
        else:
            cleaned[column] = taken[key] = key
    if not errors and not cleaned:
        errors.append(_("Map at least one column to a field."))
    if errors:
        raise ValidationError({"mapping": errors})
    return cleaned


# -- the file ------------------------------------------------------------------------------------

def _lines(pieces):
    """Physical lines (endings kept, as csv wants them) from text pieces cut anywhere; chained
    in C, a piece's lines at a time (an import reads every line twice)."""
    return itertools.chain.from_iterable(_piece_lines(pieces))


def _piece_lines(pieces):
    rest = ""
    for piece in pieces:
        lines = io.StringIO(rest + piece, newline="").readlines()
        rest = ""
        # The last line may continue in the next piece (or be a "\r" whose "\n" follows).
        if lines and not lines[-1].endswith("\n"):
            rest = lines.pop()
        yield lines
    if rest:
        yield [rest]


def _reader(pieces):
    return csv.reader(_lines(pieces), strict=True)


def _records(reader):
    """(line number, cells | csv error message) for every record of a `_reader`, header
    included.

    The line number is where the record starts (the header is line 1), so a field spanning
    lines is reported where a person looking at the file would find it.
    """
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            yield start, str(error)
            continue
        if cells:
            yield start, cells


def _count_records(reader) -> int:
    """How many records `_records(reader)` would give from here on — a malformed one counts —
    with the counting in C: an upload's records are counted for progress before the run."""
    counter, rows = itertools.count(), filter(None, reader)
    while True:
        try:
            # `counter` advances once a row; zip asks `rows` first, so not for a failed one
            collections.deque(zip(rows, counter, strict=False), maxlen=0)
            return next(counter)
        except csv.Error:
            next(counter)


def _upload_pieces(upload):
    """Decoded text of an uploaded file, piece by piece; refuses what is not a text CSV."""
    size = 0
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    while True:
        raw = upload.read(BLOCK_CHARS)
        size += len(raw)
        if size > MAX_UPLOAD_BYTES:
            raise ValidationError({"file": [_("The file is larger than %(n)d MB.")
                                            % {"n": MAX_UPLOAD_BYTES // 2**20}]})
        try:
            piece = decoder.decode(raw, final=not raw)
        except UnicodeDecodeError:
            raise ValidationError({"file": [_(
                "The file is not UTF-8 text. Export the sheet as “CSV UTF-8” and try again."
            )]}) from None
        if "\x00" in piece:
            raise ValidationError({"file": [_("This is not a CSV file (it holds binary data).")]})
        if piece:
            yield piece
        if not raw:
            return


def _check_header(cells) -> list[str]:
    if isinstance(cells, str):
        raise ValidationError({"file": [_("The first line is not a CSV header: %(e)s.")
                                        % {"e": cells}]})
    header = [c.strip() for c in cells]
    if not any(header):
        raise ValidationError({"file": [_("The first line must name the columns.")]})
    seen = set()
    for name in header:
        if name and name in seen:
            raise ValidationError({"file": [_("The column %(c)s appears twice.") % {"c": name}]})
        seen.add(name)
    return header


@transaction.atomic
def import_job_create(*, upload, user=None, source: str, file_name: str = "") -> ImportJob:
    """Store an uploaded CSV (sealed, in blocks) as a draft job; ValidationError on a file that
    is empty, not UTF-8 text, or has no usable header.

    The file is read once, in pieces: stored, and its records counted for progress.
    """
    job = ImportJob.objects.create(created_by=user if getattr(user, "pk", None) else None,
                                   source=source, file_name=file_name[:255])

    def stored():
        for seq, piece in enumerate(_upload_pieces(upload)):
            ImportFileBlock.objects.create(job=job, seq=seq, data=seal_value(
                piece, subject_id=job.pk, context=FILE_CONTEXT))
            job.file_size += len(piece.encode())
            yield piece

    reader = _reader(stored())
    first = next(_records(reader), None)
    if first is None:
        raise ValidationError({"file": [_("The file is empty.")]})
    job.header = _check_header(first[1])
    job.total_rows = _count_records(reader)
    job.save(update_fields=["header", "total_rows", "file_size"])
    return job


def _file_records(job: ImportJob):
    def pieces():
        for seq in range(job.blocks.count()):
            blob = ImportFileBlock.objects.filter(job=job, seq=seq).values_list(
                "data", flat=True).get()
            yield open_value(bytes(blob), subject_id=job.pk, context=FILE_CONTEXT)

    records = _records(_reader(pieces()))
    next(records, None)  # the header, checked at upload
    return records


def _row_data(cells: list[str], *, columns: list[tuple[int, str]], custom_keys) -> dict:
    """One record's data for the person service. Empty cells are left out: an import fills
    what the file has and leaves defaults (and required-field checks) to the service."""
    data, custom = {}, {}
    for index, key in columns:
        value = cells[index]
        if value == "":
            continue
        if key in custom_keys:
            custom[key] = value
        else:
            data[key] = value
    data["custom"] = custom
    return data


def _chunks(job: ImportJob, definitions, *, limit: int | None = None, skip: int = 0):
    """(structural errors, rows for the service, records seen) per chunk of the file."""
    columns = [(job.header.index(column), key) for column, key in job.mapping.items()]
    custom_keys = {d.key for d in definitions}
    width = len(job.header)
    errors, rows, seen = [], [], 0
    for number, (line, cells) in enumerate(_file_records(job)):
        if number < skip:
            continue
        if limit is not None and number >= limit:
            break
        seen += 1
        if isinstance(cells, str):
            errors.append((line, {"row": [_("Malformed CSV: %(e)s.") % {"e": cells}]}))
        elif len(cells) != width:
            errors.append((line, {"row": [
                _("The row has %(n)d columns; the header has %(m)d.") % {"n": len(cells),
                                                                        "m": width}]}))
        else:
            rows.append((line, _row_data(cells, columns=columns, custom_keys=custom_keys)))
        if seen == CHUNK_ROWS:
            yield errors, rows, seen
            errors, rows, seen = [], [], 0
    if seen:
        yield errors, rows, seen


# -- the staff flow: map, preview, start -----------------------------------------------------

def import_job_set_mapping(*, job: ImportJob, mapping=None) -> ImportJob:
    """Set a draft's mapping (the default one when None); ValidationError if it is not usable."""
    if job.state != State.DRAFT:
        raise ValidationError(_("This import has already started."))
    fields = importable_fields()
    if mapping is None:
        mapping = default_mapping(job.header, fields)
        if not mapping:
            raise ValidationError({"mapping": [_(
                "No column is named after a field; send a mapping of column to field key."
            )]})
    job.mapping = clean_mapping(mapping, header=job.header, fields=fields)
    ImportJob.objects.filter(pk=job.pk).update(mapping=job.mapping)
    return job


def import_preview(*, job: ImportJob, rows: int = PREVIEW_ROWS) -> list[dict]:
    """What the first `rows` records would become, through the same validation, writing
    nothing: [{line, values (as they would be stored, sensitive ones masked), outcome, errors}].
    """
    definitions = custom_definitions()
    rules = {d.key: d.mask_rule for d in definitions if d.is_encrypted} | {
        name: Person._meta.get_field(name).mask_rule for name in ENCRYPTED_CORE}
    preview = []
    for structural, chunk, _seen in _chunks(job, definitions, limit=rows):
        result = person_import.person_import_chunk(rows=chunk, definitions=definitions,
                                                   dry_run=True)
        error = person_import.ImportOutcome.ERROR
        outcomes = [(line, error, errs, {}) for line, errs in structural]
        for line, outcome, errs, cleaned in sorted(outcomes + result.outcomes,
                                                   key=lambda o: o[0]):
            values = {k: v for k, v in cleaned.items() if k != "custom"}
            values.update(cleaned.get("custom", {}))
            shown = {key: mask(str(value), rules[key] or DEFAULT_RULE) if key in rules else value
                     for key, value in values.items() if value not in ("", None)}
            preview.append({"line": line, "values": shown, "outcome": outcome, "errors": errs})
    return preview


def import_job_start(*, job: ImportJob, dispatch: bool = True) -> ImportJob:
    """Queue a draft whose mapping is set; the run happens in the background after commit
    (or, with dispatch=False, when the caller calls `import_job_run`)."""
    from .tasks import run_import

    with transaction.atomic():
        updated = ImportJob.objects.filter(pk=job.pk, state=State.DRAFT).exclude(mapping={})
        if not updated.update(state=State.QUEUED):
            raise ValidationError(_("This import has already started or has no mapping."))
        job.state = State.QUEUED
        if dispatch:
            transaction.on_commit(lambda: run_import.delay(str(job.pk)))
    return job


# -- the run -----------------------------------------------------------------------------------

def import_job_run(job_id) -> ImportJob:
    """Run (or resume) a queued import: chunk by chunk, each chunk's people and the job's
    counters committed together, so a killed worker resumes after the last committed chunk."""
    with transaction.atomic():
        job = ImportJob.objects.select_for_update().get(pk=job_id)
        if job.state not in (State.QUEUED, State.RUNNING):
            return job
        job.state = State.RUNNING
        job.started_at = job.started_at or clock.now()
        job.save(update_fields=["state", "started_at"])
    definitions = custom_definitions()
    try:
        with _collector_paused():
            if connection.vendor == "postgresql" and not connection.in_atomic_block:
                _run_pipelined(job, definitions)
            else:
                for structural, rows, seen in _chunks(job, definitions, skip=job.processed_rows):
                    _write_chunk(job, person_import.person_import_prepare(
                        rows=rows, definitions=definitions, import_job_id=job.pk),
                        structural, seen)
    except (OperationalError, InterfaceError):
        raise  # transient: the task retries, and the run resumes after the last chunk
    except Exception as error:
        # The class and where, never the message: database errors quote the row's values.
        logger.error("import %s failed: %s\n%s", job.pk, error.__class__.__name__,
                     "".join(traceback.format_tb(error.__traceback__)))
        return import_job_fail(job_id=job.pk, error=error)
    return _finish(job, State.DONE)


@contextmanager
def _collector_paused():
    """Pause Python's cyclic garbage collector for a run. A chunk allocates ~50,000 containers
    that reference counting frees; the collector's passes over them (and the whole heap) cost
    ~10 % of an import and find nothing. Collected once at the end."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
        gc.collect()


def import_job_fail(*, job_id, error: Exception) -> ImportJob:
    job = ImportJob.objects.get(pk=job_id)
    return _finish(job, State.FAILED, failure=_("The import stopped (%(e)s) after %(n)d rows.")
                   % {"e": error.__class__.__name__, "n": job.processed_rows})


def _run_pipelined(job: ImportJob, definitions) -> None:
    """Prepare chunk k+2 (parse, validate, classify: Python) while a second connection writes
    chunk k (COPY and index upkeep: PostgreSQL) and, for a run with encrypted columns, a helper
    process seals chunk k+1; chunk k+1 goes to the writer once k is written, and its data keys
    to a third connection at once (committed before its people). Chunks commit one after
    another, in order; a chunk is classified against the committed rows plus the addresses of
    the chunks not yet committed.
    """
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="import-writer")
    keys_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="import-keys")
    pending, queued, unwritten, helper = None, None, ((), ()), None

    def hand_over(chunk):
        nonlocal pending
        prepared, structural, seen = chunk
        prepared.complete()  # the helper's answer, while the writer may still be busy
        # Its keys are written at once, its people when the chunk before is: they commit
        # after the keys (`PreparedImport.save_keys`: keys first is the safe order).
        keys = keys_writer.submit(prepared.save_keys)
        if pending is not None:
            pending.result()
        pending = writer.submit(_write_chunk, job, prepared, structural, seen, keys=keys)

    try:
        _switch_interval_shortened(True)
        helper = _sealing_helper(job)
        for structural, rows, seen in _chunks(job, definitions, skip=job.processed_rows):
            prepared = person_import.person_import_prepare(
                rows=rows, definitions=definitions, import_job_id=job.pk,
                pending_emails={*unwritten[0], *unwritten[1]}, sealing_helper=helper)
            if queued is not None:
                hand_over(queued)
            queued = (prepared, structural, seen)
            unwritten = (unwritten[1], prepared.new_emails)
        if queued is not None:
            hand_over(queued)
        if pending is not None:
            pending.result()
    finally:
        if helper is not None:
            helper.close()
        _switch_interval_shortened(False)
        for executor in (writer, keys_writer):
            executor.submit(connections.close_all).result()
            executor.shutdown()


_switch = {"runs": 0, "saved": None}
_switch_lock = threading.Lock()


def _switch_interval_shortened(entering: bool) -> None:
    """While any pipelined run is under way in this process, the thread preparing chunks hands
    the GIL over within `WRITER_SWITCH_INTERVAL`. The writer waits on PostgreSQL with the GIL
    released and needs it back after every reply (about ten per chunk); the preparing thread,
    pure Python, gives it up only once per switch interval, and at Python's 5 ms those
    hand-overs cost the writer up to 50 ms a chunk, as long as the chunk's COPYs take. The
    interval is the process's: the first run to start saves it, the last to end restores it."""
    with _switch_lock:
        if entering:
            if _switch["runs"] == 0:
                _switch["saved"] = sys.getswitchinterval()
                sys.setswitchinterval(min(_switch["saved"], WRITER_SWITCH_INTERVAL))
            _switch["runs"] += 1
        else:
            _switch["runs"] -= 1
            if _switch["runs"] == 0:
                sys.setswitchinterval(_switch["saved"])


def _sealing_helper(job: ImportJob) -> SealingHelper | None:
    """A helper process to seal in, for a run with encrypted columns and rows enough to repay
    its start (~0.1 s); None otherwise, or when it cannot start (the run seals in-process)."""
    if (set(job.mapping.values()).isdisjoint(ENCRYPTED_CORE)
            or job.total_rows - job.processed_rows < SEALING_HELPER_ROWS):
        return None
    try:
        return SealingHelper()
    except (OSError, subprocess.SubprocessError, SealingHelperError):
        logger.warning("import %s: no sealing helper; sealing in process", job.pk)
        return None


def _write_chunk(job: ImportJob, prepared, structural: list, seen: int, *, keys=None) -> None:
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # Safe to not wait for the WAL flush: the job's counters commit with the rows, so
            # a commit lost in a crash is lost with its progress and the resumed run redoes it.
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
        result = person_import.person_import_write(prepared, keys=keys)
        _record_chunk(job, structural + result.errors, result, seen)


def _record_chunk(job: ImportJob, errors: list, result, seen: int) -> None:
    job.processed_rows += seen
    job.created_count += result.created
    job.duplicate_count += result.duplicates
    job.stopped_count += result.stopped
    job.error_count += len(errors)
    room = ImportJob.ERRORS_KEPT - len(job.errors)
    if room > 0 and errors:
        job.errors += [{"line": line, "errors": errs} for line, errs in sorted(
            errors, key=lambda e: e[0])[:room]]
    job.save(update_fields=["processed_rows", "created_count", "duplicate_count",
                            "stopped_count", "error_count", "errors"])


def _finish(job: ImportJob, state: str, *, failure: str = "") -> ImportJob:
    """End a run: the file's blocks are deleted and its key destroyed (crypto-shredding), so the
    plaintext identifiers it held do not outlive the import."""
    job.state, job.failure, job.finished_at = state, failure, clock.now()
    with transaction.atomic():
        job.save(update_fields=["state", "failure", "finished_at"])
        job.blocks.all().delete()
    destroy_data_key(job.pk)
    return job


def import_job_submit(*, upload, user=None, source: str, file_name: str = "",
                      mapping=None) -> ImportJob:
    """Upload, map (by header name when `mapping` is None) and queue, all or nothing: the API's
    and the command's one call. Raises ValidationError for the file or the mapping."""
    with transaction.atomic():
        job = import_job_create(upload=upload, user=user, source=source, file_name=file_name)
        import_job_set_mapping(job=job, mapping=mapping)
        return import_job_start(job=job)


def import_job_discard(*, job: ImportJob) -> None:
    """Delete a draft that will not run, with its file."""
    if job.state == State.DRAFT:
        ImportJob.objects.filter(pk=job.pk).delete()
        destroy_data_key(job.pk)
