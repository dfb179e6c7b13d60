"""Handing a batch's messages to SMTP, and marking each one handed off (campaigns.sender).

Each message is marked (its `sent_at`, what allowed it, status SENT) after the server took it
and before the next one is committed to the server, so a worker killed mid-batch leaves at most
one message handed off but unmarked: the only one that can go twice. Waiting for each mark cost a
round trip to PostgreSQL per message (~0.3 ms of a sending process's ~2.5 ms per message in
bench/campaign.py). Over SMTP, the mark of message k now runs on a connection of its own while
message k+1's envelope goes to the server (MAIL, RCPT, DATA: three round trips); its content
and the final "." that commits it wait until mark k has committed. Same guarantee, the round
trip hidden.

The hand-off itself does what Django's SMTP backend does for one message, less what
bench/send_throughput.py measured as avoidable: parsing the From address again for every message
(and a plain ASCII recipient that the parser would return unchanged), the generator's search
of the body for a clash with a random MIME boundary, and, for the usual shape of message,
building the `email.message` tree at all (`wire.direct_wire` lays out the same bytes).
"""

import contextlib
import functools
import json
import os
import re
import select
import smtplib
import threading
import uuid

import psycopg2
from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.core.mail.backends.smtp import EmailBackend as SMTPBackend
from django.core.mail.message import sanitize_address
from django.db import DatabaseError
from django.db import connection as db

from config import clock
from crm.models import Person

from . import gateway
from .models import EmailMessage, MessageStatus
from .wire import direct_wire, wire_bytes

# An address sanitize_address() would return unchanged: ASCII, no display name, nothing to quote.
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+\Z")
_LEADING_DOT = re.compile(rb"(?m)^\.")  # dot-stuffing (RFC 5321 4.5.2), as smtplib does it


def _nothing() -> None:
    pass


class HandOff:
    """Hand one built message to the batch's backend. Over Django's SMTP backend (`smtp`) it
    sends it itself, calling `before_commit()` before the final "."; any other backend (locmem
    in tests, the development mailbox) gets its own send_messages()."""

    def __init__(self, backend):
        self.backend = backend
        self.smtp = isinstance(backend, SMTPBackend) and backend.connection is not None
        self.encoding = settings.DEFAULT_CHARSET
        self.envelope_from = (smtplib.quoteaddr(sanitize_address(settings.DEFAULT_FROM_EMAIL,
                                                                 self.encoding))
                              if self.smtp else None)
        self.headers: dict = {}  # laid-out headers, for this batch only (they hold addresses)

    def __call__(self, message: EmailMultiAlternatives, before_commit=_nothing):
        """Send `message`; returns what reads the server's answer to it (raising as smtplib
        would), to be called before anything else goes over the connection."""
        if not self.smtp or message.encoding or message.from_email != settings.DEFAULT_FROM_EMAIL:
            before_commit()  # this path commits the message too
            self.backend.send_messages([message])
            return _nothing
        recipients = [f"<{to}>" if _PLAIN_ADDRESS.match(to)
                      else smtplib.quoteaddr(sanitize_address(to, self.encoding))
                      for to in message.recipients()]
        # Random (104 bits: no body holds it), and short enough that the Content-Type header
        # fits on one line (the policy's fast path).
        boundary = f"=_{uuid.uuid4().hex[:26]}_="
        data = direct_wire(message, boundary, self.headers)
        if data is None:
            mime = message.message()
            if mime.is_multipart():
                mime.set_boundary(boundary)
            data = wire_bytes(mime)
        _transaction(self.backend.connection, self.envelope_from, recipients, data,
                     before_commit)
        return functools.partial(_final_reply, self.backend.connection)


def _transaction(smtp: smtplib.SMTP, sender: str, recipients: list, data: bytes,
                 before_commit) -> None:
    """smtplib's sendmail() for addresses already quoted, up to the final "." (its reply is
    _final_reply's), with the same replies, errors and resets, and `before_commit()` called
    before the content goes."""
    smtp.ehlo_or_helo_if_needed()
    size = f" size={len(data)}" if smtp.does_esmtp and smtp.has_extn("size") else ""
    smtp.putcmd("mail", f"FROM:{sender}{size}")
    code, reply = smtp.getreply()
    if code != 250:
        _abort(smtp, code)
        raise smtplib.SMTPSenderRefused(code, reply, sender)
    refused = {}
    for to in recipients:
        smtp.putcmd("rcpt", f"TO:{to}")
        code, reply = smtp.getreply()
        if code not in (250, 251):
            refused[to] = (code, reply)
        if code == 421:
            smtp.close()
            raise smtplib.SMTPRecipientsRefused(refused)
    if len(refused) == len(recipients):
        _abort(smtp, 0)
        raise smtplib.SMTPRecipientsRefused(refused)
    smtp.putcmd("data")
    code, reply = smtp.getreply()
    if code != 354:
        _abort(smtp, code)  # no transaction left open for the next message
        raise smtplib.SMTPDataError(code, reply)
    try:
        before_commit()
    except BaseException:
        smtp.close()  # inside DATA: dropping the connection discards the message (a QUIT now
        raise  # would be read as part of it)
    # The content and the final "." in one write, as smtplib sends them: a "." of its own
    # would wait for the server's delayed ACK (Nagle), ~40 ms a message.
    content = _LEADING_DOT.sub(b"..", data)
    smtp.send(content + (b".\r\n" if content.endswith(b"\r\n") else b"\r\n.\r\n"))


def _final_reply(smtp: smtplib.SMTP) -> None:
    """The server's answer to a message's final ".": 250, it has taken the message."""
    code, reply = smtp.getreply()
    if code != 250:
        _abort(smtp, code)
        raise smtplib.SMTPDataError(code, reply)


def _abort(smtp: smtplib.SMTP, code: int) -> None:
    """After a refusal: a 421 means the server is closing; otherwise reset the transaction."""
    if code == 421:
        smtp.close()
        return
    with contextlib.suppress(smtplib.SMTPServerDisconnected):
        smtp.rset()


# -- the mark ---------------------------------------------------------------------------------
# The address is recorded only while the person is not erased: an erasure that committed
# after this batch read the address (and blanked the log) must not have it written back. The row
# turns SENT with its mark, unless something else changed its state since the claim (it keeps
# that state, and the record of its hand-off).
_OUTBOX, _PEOPLE = EmailMessage._meta.db_table, Person._meta.db_table
_WAS_CLAIMED = f"{_OUTBOX}.status = '{MessageStatus.SENDING}'"
MARK_SENT = (  # the table names and states are ours; every value is a parameter
    f"UPDATE {_OUTBOX} SET sent_at = %s, "  # noqa: S608
    # The address as enqueued (the usual case) is kept without looking the person up.
    f"to_address = CASE WHEN {_OUTBOX}.to_address = %s THEN {_OUTBOX}.to_address "
    f"WHEN EXISTS (SELECT 1 FROM {_PEOPLE} WHERE {_PEOPLE}.id = "
    f"{_OUTBOX}.person_id AND {_PEOPLE}.erased_at IS NULL) THEN %s ELSE '' END, "
    f"status = CASE WHEN {_WAS_CLAIMED} THEN '{MessageStatus.SENT}' ELSE {_OUTBOX}.status END, "
    f"reason = CASE WHEN {_WAS_CLAIMED} THEN '' ELSE {_OUTBOX}.reason END, "
    f"lease_until = CASE WHEN {_WAS_CLAIMED} THEN NULL ELSE {_OUTBOX}.lease_until END, "
    "allowed_by = %s, updated_at = %s WHERE id = %s")
# On PostgreSQL the same statement is prepared once per connection: parsing and planning it for
# every message cost the server more than running it.
_MARK_NAME = "consenso_mark_sent_3"  # a new name whenever the statement changes
_MARK_PREPARE = (f"PREPARE {_MARK_NAME} (timestamptz, varchar, varchar, jsonb, timestamptz, "
                 "bigint) AS " + MARK_SENT.replace("%s", "${}").format(1, 2, 3, 4, 5, 6))
_MARK_EXECUTE = f"EXECUTE {_MARK_NAME} (%s, %s, %s, %s, %s, %s)"


def _mark_params(row, address: str, state: str, event, tracking: str | None) -> list:
    """What allowed the message (and, for a campaign, whether it was tracked)."""
    now = clock.now()
    proof = {"opt_in": state, "event": event, "reason": gateway.Reason.ELIGIBLE}
    if tracking:
        proof["tracking"] = tracking
    return [now, address, address, json.dumps(proof), now, row.pk]


def mark_sent(cursor, row, address: str, state: str, event, tracking: str | None = None,
              statement: str = MARK_SENT) -> None:
    """Mark one message handed off, now, on `cursor` (plain SQL: building the ORM's UPDATE
    cost more than running it)."""
    cursor.execute(statement, _mark_params(row, address, state, event, tracking))


def marks_for(cursor, hand_off: HandOff):
    """How this batch marks its messages: pipelined over SMTP on PostgreSQL; else each at once
    on the batch's cursor (also inside a transaction, whose rows no other connection sees)."""
    if db.vendor != "postgresql":
        return _MarksAtOnce(cursor, MARK_SENT)
    if hand_off.smtp and not db.in_atomic_block:
        return _PipelinedMarks()
    cursor.execute("SELECT 1 FROM pg_prepared_statements WHERE name = %s", [_MARK_NAME])
    if cursor.fetchone() is None:  # a rolled-back PREPARE is gone: looked up once per batch
        cursor.execute(_MARK_PREPARE)
    return _MarksAtOnce(cursor, _MARK_EXECUTE)


class _MarksAtOnce:
    """Each mark written when it is started, on the batch's own cursor."""

    broken = False

    def __init__(self, cursor, statement: str):
        self.cursor, self.statement = cursor, statement

    def start(self, row, address: str, state: str, event, tracking=None) -> None:
        mark_sent(self.cursor, row, address, state, event, tracking, self.statement)

    def settle(self) -> None:
        pass

    def abandon(self) -> None:
        pass


class _PipelinedMarks:
    """Each mark sent without waiting, on this thread's mark connection (autocommit, commits
    not waiting for the disk, as the batch's own); `settle()` waits until it has committed."""

    def __init__(self):
        self.connection = _mark_connection()
        self.cursor = self.connection.cursor()  # kept: psycopg2 polls through it
        self.pending = False
        self.broken = False
        try:  # one round trip per batch: a connection that died idle fails here, not mid-batch
            with db.wrap_database_errors:
                self.cursor.execute("SELECT 1")
                _wait(self.connection)
        except DatabaseError:
            _close_mark_connection()
            self.connection = _mark_connection()  # once; should this fail too, the batch does
            self.cursor = self.connection.cursor()

    def start(self, row, address: str, state: str, event, tracking=None) -> None:
        self.settle()
        self.pending = True
        try:
            with db.wrap_database_errors:
                self.cursor.execute(_MARK_EXECUTE,
                                    _mark_params(row, address, state, event, tracking))
        except BaseException:
            self.broken = True
            self.abandon()
            raise

    def settle(self) -> None:
        if not self.pending:
            return
        try:
            with db.wrap_database_errors:
                _wait(self.connection)
        except BaseException:
            self.broken = True
            self.abandon()
            raise
        self.pending = False

    def abandon(self) -> None:
        """A mark may be in flight and nobody will wait for it: drop the connection (its
        message is then marked or not: the one message that can go twice)."""
        if self.pending:
            self.pending = False
            _close_mark_connection()


MARK_TIMEOUT_SECONDS = 30  # to connect, or for one mark: far beyond what either takes
# One mark connection per thread (a development server sends from its request threads), opened
# by the process that uses it (a forked worker opens its own).
_local = threading.local()
_opened: list = []  # (pid, connection): what close_mark_connections() closes


def _mark_connection():
    connection = getattr(_local, "connection", None)
    if connection is not None and (_local.pid != os.getpid() or connection.closed):
        connection = None  # a forked child opens its own
    if connection is None:
        params = db.get_connection_params()
        params.pop("cursor_factory", None)
        params.setdefault("connect_timeout", MARK_TIMEOUT_SECONDS)
        with db.wrap_database_errors:
            connection = psycopg2.connect(**params, async_=True)
            try:
                _wait(connection)
                cursor = connection.cursor()
                for statement in ("SET synchronous_commit TO off", _MARK_PREPARE):
                    cursor.execute(statement)
                    _wait(connection)
            except BaseException:
                connection.close()
                raise
        _opened.append((os.getpid(), connection))
        _local.connection, _local.pid = connection, os.getpid()
    return connection


def _wait(connection) -> None:
    """Until the asynchronous connection's current command has finished (psycopg2's poll loop);
    a server silent for MARK_TIMEOUT_SECONDS is taken for gone."""
    while True:
        state = connection.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        events = select.POLLIN if state == psycopg2.extensions.POLL_READ else select.POLLOUT
        waiting = select.poll()
        waiting.register(connection.fileno(), events)
        if not waiting.poll(MARK_TIMEOUT_SECONDS * 1000):
            raise psycopg2.OperationalError("the mark connection did not answer in time")


def _close(entry) -> None:
    with contextlib.suppress(psycopg2.Error):
        entry[1].close()
    with contextlib.suppress(ValueError):
        _opened.remove(entry)


def _close_mark_connection() -> None:
    connection, _local.connection = getattr(_local, "connection", None), None
    if connection is not None and _local.pid == os.getpid():
        _close((_local.pid, connection))


def close_mark_connections() -> None:
    """Close the mark connections this process opened, in any thread (tests, before their
    database is dropped)."""
    for entry in [entry for entry in _opened if entry[0] == os.getpid()]:
        _close(entry)
    _local.connection = None
