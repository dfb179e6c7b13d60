"""The outbox sender: claim a batch of rows, re-check the mail gateway from fresh data, hand each
allowed message to SMTP over one connection, and record what happened to every row.

Crash safety rests on the rows, not the broker. A claim is a lease (SENDING until
`lease_until`); each row is marked right after its hand-off (its `sent_at`; the next message is
committed to SMTP only once that mark has committed: campaigns.handoff), so a worker killed
mid-batch leaves only the message in flight unmarked. The sweeper (`requeue_stuck`) puts rows
whose lease ran out back in the queue: nothing is lost, and at most that one message goes
twice. The mark also turns the row SENT (one statement per message; it commits while the next
message's envelope goes to SMTP, so it costs no wait).

No change a person makes can miss a batch: before the gateway's re-check, the batch takes a
share lock on its people's rows (on a second connection, held until the batch's last hand-off),
so an opt-out, a stop of processing or an erasure — each of which locks the person's row first —
either commits before the re-check, which then sees it, or waits until the batch is handed off.
A person whose row is being changed at that moment is skipped (SKIP LOCKED) and their message
tried again a few seconds later.

`lease_until` means "due at" on a QUEUED row (a transient failure sets it to the retry time) and
"claimed until" on a SENDING one.
"""

import contextlib
import logging
import os
import smtplib
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.backends.smtp import EmailBackend as SMTPBackend
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, transaction
from django.db import connection as db
from django.db.models import OuterRef, Q, Subquery

from config import clock
from consents.models import ConsentEvent
from consents.selectors import consent_settings
from crm.models import Person

from . import campaign_mail, gateway
from .campaign_send import CANCELLED_REASON
from .handoff import HandOff, marks_for
from .models import CampaignStatus, EmailMessage
from .models import MessageStatus as S

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
BACKOFF_BASE_SECONDS = 60  # then 120, 240, 480; capped below
BACKOFF_CAP_SECONDS = 30 * 60
SWEEP_MAX_BATCHES = 100  # per sweep: a huge backlog is drained over several sweeps
_FIELDS = ("id", "person_id", "kind", "to_address", "subject", "body_text", "body_html",
           "headers", "message_id", "in_reply_to", "attempts", "campaign_id", "template")
BUSY_RETRY_SECONDS = 2  # a person whose row is being changed: their message waits this long
_OUTBOX = EmailMessage._meta.db_table


@dataclass
class BatchResult:
    sent: int = 0
    suppressed: int = 0
    failed: int = 0
    retry_ids: list = field(default_factory=list)  # back in the queue: send them again later
    retry_in: int = 0  # seconds until every one of them is due
    campaign_ids: set = field(default_factory=set)  # campaigns this batch sent for


@dataclass(frozen=True)
class Outcome:
    reason: str
    permanent: bool
    connection_lost: bool = False


def backoff(attempts: int) -> int:
    """Seconds to wait after the `attempts`-th failed attempt."""
    return min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempts - 1))


def classify(error: Exception) -> Outcome:
    """What an exception raised while handing a message to SMTP means for that message.

    Only codes reach the log and the row: server texts may quote the address.
    """
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        code = min((code for code, _text in error.recipients.values()), default=-1)
    elif isinstance(error, smtplib.SMTPResponseException):
        code = error.smtp_code
    elif isinstance(error, OSError):  # timeouts, refused or dropped connections (and smtplib's)
        return Outcome("smtp_connection", permanent=False, connection_lost=True)
    else:  # the message itself cannot be built (e.g. a header with a newline): retrying won't help
        return Outcome(f"message_error:{type(error).__name__}"[:64], permanent=True)
    if 500 <= code < 600:
        return Outcome(f"smtp_{code}", permanent=True)
    if 400 <= code < 500:
        return Outcome(f"smtp_{code}", permanent=False, connection_lost=code == 421)
    return Outcome("smtp_connection", permanent=False, connection_lost=True)


def send_batch(message_ids) -> BatchResult:
    """Send the outbox rows among `message_ids` that are due and not claimed by someone else.

    Rows the gateway blocks now become SUPPRESSED with its reason; sent rows record what allowed
    them. Transient failures are put back in the queue with a backoff and returned in
    `retry_ids` for the caller (the task) to schedule.
    """
    result = BatchResult()
    with db.cursor() as cursor, _commits_without_flush(cursor):
        lease = _Lease.start()
        rows = _claim(message_ids, lease)
        _retry_skipped(message_ids, rows, lease, result)
        if not rows:
            return result
        result.campaign_ids = {row.campaign_id for row in rows if row.campaign_id}
        with _people_lock({row.person_id for row in rows if row.person_id}) as busy:
            decisions, people = _fresh_decisions(rows)
            allowed = _suppress_blocked(rows, decisions, result)
            allowed = _release_busy(allowed, busy, result)
            renderer = campaign_mail.BatchRenderer(allowed)
            allowed = _campaign_gate(allowed, renderer, result)
            if allowed:
                _deliver(allowed, people, renderer, lease, result, cursor)
    return result


_LOCK_ALIAS = "outbox-people-lock"
_PEOPLE_LOCK = (  # noqa: S608 - the table name is ours, the ids a parameter
    "WITH locked AS (SELECT id FROM {people} WHERE id = ANY(%s::uuid[]) FOR SHARE SKIP LOCKED) "
    "SELECT id FROM {people} WHERE id = ANY(%s::uuid[]) AND id NOT IN (SELECT id FROM locked)")
# One lock connection per thread (a development server sends from its request threads), opened
# by the process that uses it (a forked worker opens its own).
_local = threading.local()
_opened: list = []  # (pid, connection): what close_lock_connections() closes


def _lock_connection():
    lock_db = getattr(_local, "db", None)
    if lock_db is None or _local.pid != os.getpid():
        base = connections[DEFAULT_DB_ALIAS]
        lock_db = type(base)(dict(base.settings_dict), alias=_LOCK_ALIAS)
        lock_db.inc_thread_sharing()  # so that close_lock_connections() may close it
        _local.db, _local.pid = lock_db, os.getpid()
        _opened.append((os.getpid(), lock_db))
    return lock_db


def _drop_lock_connection(lock_db) -> None:
    """A broken lock connection: closing it releases whatever it held."""
    with contextlib.suppress(Exception):
        lock_db.close()
    _local.db = None


@contextlib.contextmanager
def _people_lock(person_ids):
    """Share-lock the people of a batch until the block ends (see the module docstring);
    yields the ids of those whose row another transaction is changing right now."""
    if db.vendor != "postgresql" or not person_ids:
        yield set()
        return
    ids = [str(pk) for pk in person_ids]
    sql = _PEOPLE_LOCK.format(people=Person._meta.db_table)
    for attempt in (1, 2):  # a connection the server dropped is reopened once
        lock_db = _lock_connection()
        try:
            with lock_db.cursor() as cursor:
                cursor.execute("BEGIN")
                cursor.execute(sql, [ids, ids])
                busy = {uuid.UUID(str(row[0])) for row in cursor.fetchall()}
            break
        except DatabaseError:
            _drop_lock_connection(lock_db)
            if attempt == 2:
                raise
    try:
        yield busy
    finally:
        try:
            with lock_db.cursor() as cursor:
                cursor.execute("ROLLBACK")
        except DatabaseError:
            _drop_lock_connection(lock_db)


def close_lock_connections() -> None:
    """Close the lock connections this process opened, in any thread (tests, before their
    database is dropped)."""
    mine = [(pid, c) for pid, c in _opened if pid == os.getpid()]
    for entry in mine:
        with contextlib.suppress(Exception):
            entry[1].close()
        _opened.remove(entry)
    _local.db = None


def _release_busy(rows, busy: set, result: BatchResult) -> list:
    """Rows whose person is being changed go back to the queue for a few seconds, unsent and
    without counting an attempt; the others are returned."""
    if not busy:
        return rows
    waiting = [row.pk for row in rows if row.person_id in busy]
    now = clock.now()
    EmailMessage.objects.filter(pk__in=waiting).update(
        status=S.QUEUED, lease_until=now + timedelta(seconds=BUSY_RETRY_SECONDS),
        updated_at=now)
    result.retry_ids.extend(waiting)
    result.retry_in = max(result.retry_in, BUSY_RETRY_SECONDS)
    return [row for row in rows if row.person_id not in busy]


def _campaign_gate(rows, renderer, result: BatchResult) -> list:
    """A paused campaign's rows are held, a cancelled one's suppressed, before any hand-off."""
    held, cancelled, go = [], [], []
    for row in rows:
        if row.template != campaign_mail.TEMPLATE:
            go.append(row)
            continue
        status = renderer.status(row)
        if status == CampaignStatus.SENDING:
            go.append(row)
        elif status in (CampaignStatus.CANCELLED, None):
            cancelled.append(row.pk)
        else:
            held.append(row.pk)
    now = clock.now()
    if held:
        EmailMessage.objects.filter(pk__in=held).update(status=S.HELD, lease_until=None,
                                                        updated_at=now)
    if cancelled:
        EmailMessage.objects.filter(pk__in=cancelled).update(
            status=S.SUPPRESSED, reason=CANCELLED_REASON, lease_until=None, updated_at=now)
        result.suppressed += len(cancelled)
    return go


def _suppress_blocked(rows, decisions, result: BatchResult) -> list:
    """Mark the rows the gateway blocks SUPPRESSED with its reason; return the others."""
    allowed, blocked = [], defaultdict(list)
    for row in rows:
        decision = decisions[row.pk]
        if decision.allowed:
            allowed.append(row)
        else:
            blocked[decision.reason].append(row.pk)
    now = clock.now()
    for reason, ids in blocked.items():
        # The body stays: the log shows what would have gone, and why it did not.
        EmailMessage.objects.filter(pk__in=ids).update(
            status=S.SUPPRESSED, reason=reason, lease_until=None, updated_at=now)
        result.suppressed += len(ids)
    return allowed


def _claimable(now) -> Q:
    due = Q(status=S.QUEUED) & (Q(lease_until__isnull=True) | Q(lease_until__lte=now))
    # A SENDING row whose lease ran out was not handed off, unless it was marked sent.
    return due | Q(status=S.SENDING, lease_until__lt=now, sent_at__isnull=True)


def _claim(message_ids, lease: "_Lease") -> list[EmailMessage]:
    """QUEUED (or lease-expired SENDING) → SENDING for this worker. SKIP LOCKED: two workers
    handed the same ids split them instead of waiting for each other. On PostgreSQL one
    statement locks, claims and returns the rows (UPDATE … RETURNING)."""
    claimable = (EmailMessage.objects.select_for_update(skip_locked=True)
                 .filter(_claimable(lease.started), pk__in=list(message_ids)))
    if db.vendor == "postgresql":
        columns = ", ".join(EmailMessage._meta.get_field(name).column for name in _FIELDS)
        # Compiled inside the transaction: Django refuses FOR UPDATE outside one.
        with transaction.atomic():
            inner, params = claimable.order_by("pk").values("pk").query.sql_with_params()
            rows = list(EmailMessage.objects.raw(
                f"UPDATE {_OUTBOX} SET status = %s, lease_until = %s, updated_at = %s "  # noqa: S608
                f"WHERE id IN ({inner}) RETURNING {columns}",
                [S.SENDING, lease.until, lease.started, *params]))
        return sorted(rows, key=lambda row: row.pk)
    with transaction.atomic():
        rows = list(claimable.only(*_FIELDS).order_by("pk"))
        EmailMessage.objects.filter(pk__in=[row.pk for row in rows]).update(
            status=S.SENDING, lease_until=lease.until, updated_at=lease.started)
    return rows


def _retry_skipped(message_ids, rows, lease: "_Lease", result: BatchResult) -> None:
    """Rows the claim skipped because another transaction held them (SKIP LOCKED), and that are
    still due: an erasure blanking a person's log rows holds them, not only another claimer. No
    task would come back for them, so this batch asks for a retry in a few seconds; a row
    another worker was claiming is no longer due by then and the retry leaves it alone."""
    missing = set(message_ids) - {row.pk for row in rows}
    if not missing:
        return
    skipped = list(EmailMessage.objects.filter(_claimable(lease.started), pk__in=missing)
                   .values_list("pk", flat=True))  # a plain read: it waits for no lock
    if skipped:
        result.retry_ids.extend(skipped)
        result.retry_in = max(result.retry_in, BUSY_RETRY_SECONDS)


def _fresh_decisions(rows) -> tuple[dict, dict]:
    """Row id → gateway Decision, and person id → (address, opt-in state, last opt-in event),
    read from one snapshot: one recheck per kind (set-based) plus one query for the proof."""
    by_kind = defaultdict(set)
    for row in rows:
        if row.person_id is not None:
            by_kind[row.kind].add(row.person_id)
    everyone = set().union(*by_kind.values())
    last_event = (ConsentEvent.objects.filter(person_id=OuterRef("pk"), subject="email_opt_in")
                  .order_by("-seq").values("pk")[:1])
    # Read (and on a fresh database create) the settings row first: inside the snapshot, a
    # get_or_create that races another worker's cannot see the winner's row and fails.
    consent_settings()
    # One snapshot, so the decision and the proof it records come from the same data. The
    # cursor is created outside the transaction so that a due connection health check cannot be
    # its first statement: SET TRANSACTION has to be.
    snapshot = db.vendor == "postgresql" and not db.in_atomic_block
    with db.cursor() as cursor, transaction.atomic():
        if snapshot:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        per_kind = {kind: gateway.recheck(ids, kind) for kind, ids in by_kind.items()}
        people = {pk: (email, state, event) for pk, email, state, event in
                  Person.objects.filter(pk__in=everyone)
                  .annotate(event=Subquery(last_event))
                  .values_list("pk", "email", "email_opt_in", "event")}
    gone = gateway.Decision(False, gateway.Reason.ERASED)  # the person row was deleted
    decisions = {row.pk: per_kind[row.kind].get(row.person_id, gone) if row.person_id else gone
                 for row in rows}
    return decisions, people


class _Lease:
    """This batch's claim. Renewed halfway through, so a slow but healthy batch is never swept
    from under it; `lease_until` doubles as the owner's token (a sweeper that re-queued a row
    changes it, and this batch then skips that row)."""

    def __init__(self, started):
        self.started = started
        self.until = started + timedelta(seconds=settings.OUTBOX_LEASE_SECONDS)
        self.lost: set = set()

    @classmethod
    def start(cls) -> "_Lease":
        return cls(clock.now())

    def keep(self, remaining) -> None:
        """Renew the claim on the `remaining` rows once half of it has run out."""
        now = clock.now()
        if now < self.until - timedelta(seconds=settings.OUTBOX_LEASE_SECONDS / 2):
            return
        ids = [row.pk for row in remaining]
        until = now + timedelta(seconds=settings.OUTBOX_LEASE_SECONDS)
        mine = EmailMessage.objects.filter(pk__in=ids, status=S.SENDING, lease_until=self.until)
        if mine.update(lease_until=until) < len(ids):
            kept = set(EmailMessage.objects.filter(pk__in=ids, lease_until=until)
                       .values_list("pk", flat=True))
            self.lost |= set(ids) - kept
        self.until = until


def _deliver(rows, people, renderer, lease: _Lease, result: BatchResult, cursor) -> None:
    """Hand each row to SMTP over one connection (timeouts: EMAIL_TIMEOUT) and mark it sent."""
    try:
        backend = _mail_connection()
    except Exception as error:  # noqa: BLE001 - whatever it is, every row waits for a retry
        outcome = classify(error)
        logger.warning("outbox: cannot open the mail connection (%s)", outcome.reason)
        for row in rows:
            _retry_later(row, "smtp_connect", result)
        return
    clean = False
    try:
        clean = _send_each(rows, people, renderer, lease, result, backend, cursor)
    finally:
        if clean and getattr(_kept_smtp, "backend", None) is backend:
            _kept_smtp.used_at = time.monotonic()
        else:
            _close_mail_connection(backend)


# The SMTP session outlives its batch: the next batch of the same thread (and process) sends
# over it. Opening one per batch of a hundred cost the benchmark's receiving server ~170-300 µs
# per message, a third to a half of what receiving the message itself cost it (bench/README.md).
# Kept only after a batch in which every hand-off went through (an error may leave a transaction
# open or replies out of step), for a while and a few batches (a server may cap a session, or a
# firewall drop an idle one without a word), and reset (RSET) before it is used again.
KEEP_SMTP_SECONDS = 30
KEEP_SMTP_BATCHES = 20
_kept_smtp = threading.local()


def _mail_connection():
    """An open mail backend for a batch: this thread's SMTP session from its last batch if it
    goes to the same server, is young enough and answers an RSET, else a new one."""
    backend = get_connection(fail_silently=False)
    if not isinstance(backend, SMTPBackend):
        backend.open()
        return backend
    key = (backend.host, backend.port, backend.username, backend.use_tls, backend.use_ssl,
           backend.timeout)
    kept = getattr(_kept_smtp, "backend", None)
    if kept is not None and _kept_smtp.pid != os.getpid():
        _kept_smtp.backend = kept = None  # the parent's session (forked): not ours to QUIT
    if kept is not None:
        _kept_smtp.batches += 1
        if (_kept_smtp.key == key and kept.connection is not None
                and _kept_smtp.batches <= KEEP_SMTP_BATCHES
                and time.monotonic() - _kept_smtp.used_at <= KEEP_SMTP_SECONDS
                and _answers(kept.connection)):
            return kept
        _close_mail_connection(kept)
    backend.open()
    _kept_smtp.backend, _kept_smtp.key, _kept_smtp.pid = backend, key, os.getpid()
    _kept_smtp.batches, _kept_smtp.used_at = 1, time.monotonic()
    return backend


def _answers(connection) -> bool:
    """The session is alive and out of any mail transaction (RSET: NOOP would answer 250 inside
    one, too)."""
    try:
        return connection.rset()[0] == 250
    except OSError:  # smtplib's errors are OSErrors: closed, reset, timed out
        return False


def _close_mail_connection(backend) -> None:
    if getattr(_kept_smtp, "backend", None) is backend:
        _kept_smtp.backend = None
    # A connection that is already gone cannot be closed politely; all sent is marked.
    with contextlib.suppress(OSError):
        backend.close()


def close_mail_connection() -> None:
    """Close this thread's kept SMTP session, if any (tests; a worker's ends with its process)."""
    kept = getattr(_kept_smtp, "backend", None)
    if kept is not None:
        _close_mail_connection(kept)


@contextlib.contextmanager
def _commits_without_flush(cursor):
    """The batch's writes commit without waiting for the WAL flush (synchronous_commit off).

    A disk flush per message costs more than handing the message to SMTP. A killed worker
    loses nothing this way (the commit is in PostgreSQL's hands); only a crash of PostgreSQL
    itself can forget the last fraction of a second of claims and marks, and those messages then
    go again: a duplicate, never a loss.
    """
    postgres = db.vendor == "postgresql"
    if postgres:
        cursor.execute("SET synchronous_commit TO off")
    try:
        yield
    finally:
        if postgres:
            with contextlib.suppress(DatabaseError):  # a broken connection resets itself
                cursor.execute("RESET synchronous_commit")


def _send_each(rows, people, renderer, lease: _Lease, result: BatchResult, backend,
               cursor) -> bool:
    """Hand off and mark each row; True when every hand-off went through (the session is
    clean enough to keep).

    Each message is built while the server is still taking the one before (the reply to its
    final "." is read after the build): the build's CPU overlaps the server's work instead of
    waiting for it. The previous message's mark commits before this one is committed to SMTP
    (campaigns.handoff): a crash re-sends at most one message."""
    hand_off = HandOff(backend)
    marks = marks_for(cursor, hand_off)
    clean, in_flight = True, None  # in flight: (row, its mark's values, reads its reply)

    def failed(row, error) -> bool:
        """Record why `row` did not go; False when the connection is gone."""
        nonlocal clean
        if marks.broken:  # a mark did not land: the batch stops, as it always did
            raise error
        marks.settle()
        clean = False
        outcome = classify(error)
        logger.warning("outbox: message %s not sent (%s)", row.pk, outcome.reason)
        if outcome.permanent:
            _fail(row, outcome.reason, result)
        else:
            _retry_later(row, outcome.reason, result)
        return not outcome.connection_lost

    def land(sent) -> bool:
        """The reply to the message in flight: marked sent, or recorded as not sent."""
        row, mark, read_reply = sent
        try:
            read_reply()
        except OSError as error:  # smtplib's errors too; anything else ends the batch
            return failed(row, error)
        marks.start(row, *mark)
        result.sent += 1
        return True

    try:
        for index, row in enumerate(rows):
            lease.keep(rows[index:])
            if row.pk in lease.lost:
                continue
            address, state, event = people[row.person_id]
            message, tracking, error = None, None, None
            try:
                content = None
                if row.template == campaign_mail.TEMPLATE:
                    content, tracking = renderer(row), renderer.tracking(row)
                message = _build(row, address, backend, content)
            except Exception as build_error:  # noqa: BLE001 - recorded below, as a send error
                error = build_error
            sent, in_flight = in_flight, None
            if sent is not None and not land(sent):
                _release(rows[index:], lease, result)
                return False
            try:
                if error is not None:
                    raise error
                read_reply = hand_off(message, before_commit=marks.settle)
            except Exception as send_error:  # noqa: BLE001 - classified: retried, failed or both
                if not failed(row, send_error):
                    _release(rows[index + 1:], lease, result)
                    return False
                continue
            in_flight = (row, (address, state, event, tracking), read_reply)
        sent, in_flight = in_flight, None
        if sent is not None:
            land(sent)
        marks.settle()
    except BaseException:
        marks.abandon()
        raise
    return clean


def _build(row, address: str, backend, content=None) -> EmailMultiAlternatives:
    """The message of `row`: its stored subject and bodies, or `content` (rendered at hand-off:
    a campaign's (RenderedEmail, headers))."""
    subject, text, html, headers = row.subject, row.body_text, row.body_html, row.headers
    if content is not None:
        rendered, extra = content
        subject, text, html, headers = rendered.subject, rendered.text, rendered.html, \
            {**headers, **extra}
    headers = {**headers, "Message-ID": row.message_id}
    if row.in_reply_to:
        headers.update({"In-Reply-To": row.in_reply_to, "References": row.in_reply_to})
    message = EmailMultiAlternatives(subject, text, settings.DEFAULT_FROM_EMAIL,
                                     [address], headers=headers, connection=backend)
    if html:
        message.attach_alternative(html, "text/html")
    return message


def _fail(row, reason: str, result: BatchResult, *, attempts: int | None = None) -> None:
    EmailMessage.objects.filter(pk=row.pk).update(
        status=S.FAILED, reason=reason, lease_until=None, updated_at=clock.now(),
        attempts=row.attempts if attempts is None else attempts)
    result.failed += 1


def _retry_later(row, reason: str, result: BatchResult) -> None:
    attempts = row.attempts + 1
    if attempts >= MAX_ATTEMPTS:
        _fail(row, f"retries_exhausted:{reason}"[:64], result, attempts=attempts)
        return
    wait = backoff(attempts)
    now = clock.now()
    EmailMessage.objects.filter(pk=row.pk).update(
        status=S.QUEUED, reason=reason, attempts=attempts, updated_at=now,
        lease_until=now + timedelta(seconds=wait))
    result.retry_ids.append(row.pk)
    result.retry_in = max(result.retry_in, wait)


def _release(rows, lease: _Lease, result: BatchResult) -> None:
    """Rows not tried because the connection dropped: back in the queue, no attempt counted
    (only those still this batch's: a row another worker claimed since is theirs)."""
    if not rows:
        return
    now = clock.now()
    EmailMessage.objects.filter(pk__in=[r.pk for r in rows], status=S.SENDING,
                                lease_until=lease.until).update(
        status=S.QUEUED, lease_until=now, updated_at=now)
    result.retry_ids.extend(r.pk for r in rows)
    result.retry_in = max(result.retry_in, BACKOFF_BASE_SECONDS)


def requeue_stuck(batch_size: int | None = None):
    """Yield, in batches, the ids of rows a lost broker message or a killed worker left behind
    (QUEUED a lease past due, SENDING past their lease), after putting them back in the queue,
    due now. The caller dispatches each batch; rows are read a batch at a time."""
    size = batch_size or settings.OUTBOX_BATCH_SIZE
    now = clock.now()
    lease = timedelta(seconds=settings.OUTBOX_LEASE_SECONDS)
    # Marked by a version that turned rows SENT at the end of their batch, which a worker did
    # not reach: sent, not stuck. (Nothing marks a row without making it SENT any more: this can
    # go once no worker older than campaigns migration 0013 is left.)
    EmailMessage.objects.filter(status=S.SENDING, lease_until__lt=now,
                                sent_at__isnull=False).update(status=S.SENT, lease_until=None)
    stuck = (Q(status=S.QUEUED, lease_until__lt=now - lease)
             | Q(status=S.QUEUED, lease_until__isnull=True, created_at__lt=now - lease)
             | Q(status=S.SENDING, lease_until__lt=now))
    for _batch in range(SWEEP_MAX_BATCHES):
        ids = list(EmailMessage.objects.filter(stuck).order_by("pk")
                   .values_list("pk", flat=True)[:size])
        if not ids:
            return
        # Re-checked in the UPDATE: a row a worker claimed meanwhile is left alone.
        EmailMessage.objects.filter(stuck, pk__in=ids).update(
            status=S.QUEUED, lease_until=now, updated_at=now)
        yield ids
