"""The sender's own hand-off to SMTP (campaigns.handoff.HandOff): over Django's SMTP backend it
builds and sends the message itself (the From address parsed once per batch, a fresh MIME
boundary); what arrives must be what Django's send_messages() would have sent. And the mark
that follows each hand-off: committed before the next message is, on a connection of its own."""

import email
from email.policy import default

import psycopg2
import pytest
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db import DatabaseError, connection
from django.test.utils import CaptureQueriesContext

from campaigns import handoff, sender, wire
from campaigns.models import EmailMessage
from campaigns.models import MessageStatus as S
from tests.campaigns.smtp_sink import Sink
from tests.campaigns.test_outbox import _messages, _status, serving

pytestmark = pytest.mark.django_db


class EnvelopeSink(Sink):
    """Also keeps each message's envelope (MAIL FROM, RCPT TO)."""

    def __init__(self):
        super().__init__()
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def smtp(settings):
    settings.DEFAULT_FROM_EMAIL = "Consenso Team <no-reply@consenso.example>"
    with serving(settings, EnvelopeSink()) as server:
        yield server


def _message(to, subject="Grüße aus Köln", html="<p>Hallo <b>Zoë</b></p>"):
    message = EmailMultiAlternatives(subject, "Hallo Zoë,\nbis bald.\n",
                                     "Consenso Team <no-reply@consenso.example>", [to],
                                     headers={"Message-ID": "<m1@consenso.example>"})
    if html:
        message.attach_alternative(html, "text/html")
    return message


def _hand_off_both_ways(smtp, message_factory):
    """Send once through HandOff and once through Django's own send_messages()."""
    backend = get_connection(fail_silently=False)
    backend.open()
    try:
        hand_off = handoff.HandOff(backend)
        assert hand_off.smtp  # the path under test
        hand_off(message_factory())()
        backend.send_messages([message_factory()])
    finally:
        backend.close()
    ours, django = smtp.messages
    return (ours, smtp.envelopes[0]), (django, smtp.envelopes[1])


@pytest.mark.parametrize("to", ["anna.rossi@example.org", "Anna <anna@exämple.org>",
                                "o'brien+news@example.org"])
def test_hand_off_sends_what_djangos_backend_would(smtp, to):
    (ours, our_envelope), (django, django_envelope) = _hand_off_both_ways(
        smtp, lambda: _message(to))
    assert our_envelope == django_envelope
    for name in ("From", "To", "Subject", "Message-ID", "MIME-Version", "Content-Type"):
        assert (ours[name] is None) == (django[name] is None), name
        if name != "Content-Type":  # the boundary differs: random on both sides
            assert ours[name] == django[name], name
    parsed = email.message_from_bytes(ours.as_bytes(), policy=default)
    assert parsed["Subject"] == "Grüße aus Köln"
    assert parsed.get_body(("plain",)).get_content() == "Hallo Zoë,\nbis bald.\n"
    assert parsed.get_body(("html",)).get_content().strip() == "<p>Hallo <b>Zoë</b></p>"


def test_plain_text_message_without_html_goes_too(smtp):
    (ours, _env), (django, _env2) = _hand_off_both_ways(
        smtp, lambda: _message("anna@example.org", html=""))
    assert not ours.is_multipart() and ours.get_payload(decode=True) == django.get_payload(
        decode=True)


def test_other_backends_get_their_own_send_messages(settings):
    from django.core import mail

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    hand_off = handoff.HandOff(get_connection())
    assert not hand_off.smtp
    hand_off(_message("anna@example.org"))
    assert mail.outbox[-1].to == ["anna@example.org"]


@pytest.mark.parametrize("subject", [
    "Hello", "Grüße aus Köln — Neuigkeiten", "A long subject " * 12, "Tabs\tand  double  spaces",
    "x" * 100, "=?utf-8?q?looks_encoded?=",
])
def test_wire_bytes_are_what_django_would_put_on_the_wire(subject):
    message = _message("anna@example.org", subject=subject)
    message.extra_headers["List-Unsubscribe"] = "<https://crm.example.com/u/" + "a" * 90 + "/>"
    message.extra_headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    mime = message.message()
    mime.set_boundary("===============fixed==")
    assert wire.wire_bytes(mime) == mime.as_bytes(linesep="\r\n")


# --- the mark that follows each hand-off -----------------------------------------------------

class MarkWatchingSink(Sink):
    """Reads, as each message's DATA arrives, which outbox rows are marked sent (on a database
    connection of its own: what a crash would leave behind at that moment)."""

    def __init__(self):
        super().__init__()
        self.marked_on_arrival: list[set] = []
        self.database = connection.get_connection_params()  # the test database's
        self.database.pop("cursor_factory", None)
        self.refuse_data: set = set()  # recipients whose message's final "." gets a 554

    async def handle_DATA(self, server, session, envelope):
        if set(envelope.rcpt_tos) & self.refuse_data:
            return "554 Message rejected"
        with psycopg2.connect(**self.database) as db, db.cursor() as cursor:
            cursor.execute("SELECT message_id FROM campaigns_emailmessage "
                           "WHERE sent_at IS NOT NULL")
            self.marked_on_arrival.append({row[0] for row in cursor.fetchall()})
        db.close()
        return await super().handle_DATA(server, session, envelope)


def _committed_messages(n, tag, sink) -> list:
    """`n` outbox rows, committed; their send task ran at once (eager): queue them again and
    forget what the sink saw of it."""
    rows = _messages(n, tag=tag)
    EmailMessage.objects.filter(pk__in=[r.pk for r in rows]).update(
        status=S.QUEUED, sent_at=None, lease_until=None, allowed_by={})
    sink.messages.clear()
    sink.arrived.clear()
    sink.marked_on_arrival.clear()
    return rows


@pytest.fixture
def watching_sink(settings):
    with serving(settings, MarkWatchingSink()) as server:
        yield server


@pytest.mark.django_db(transaction=True)
def test_each_message_reaches_smtp_only_after_the_previous_ones_mark_committed(
    watching_sink, monkeypatch
):
    rows = _committed_messages(6, "pipelined", watching_sink)
    # Slow marks (50 ms each, longer than a message's envelope takes): were the next message not
    # waiting for the previous mark, it would arrive first.
    monkeypatch.setattr(handoff, "_MARK_EXECUTE", "SELECT pg_sleep(0.05); " + handoff._MARK_EXECUTE)
    with CaptureQueriesContext(connection) as queries:
        result = sender.send_batch([row.pk for row in rows])
    assert result.sent == 6
    arrived = watching_sink.message_ids()
    assert sorted(arrived) == sorted(row.message_id for row in rows)
    for index, marked in enumerate(watching_sink.marked_on_arrival):
        assert marked == set(arrived[:index])  # every earlier one marked, this one not yet
    # The marks went on the mark connection, overlapping the next envelope: none on the batch's.
    assert not [q for q in queries.captured_queries if "mark_sent" in q["sql"]]
    assert {_status(row)[0] for row in rows} == {S.SENT}


@pytest.mark.django_db(transaction=True)
def test_a_mark_that_fails_stops_the_batch_before_the_next_message_is_committed(
    watching_sink, monkeypatch
):
    rows = _committed_messages(4, "broken-mark", watching_sink)
    monkeypatch.setattr(handoff, "_MARK_EXECUTE",
                        "EXECUTE consenso_no_such_statement (%s, %s, %s, %s, %s, %s)")
    with pytest.raises(DatabaseError):
        sender.send_batch([row.pk for row in rows])
    # The first went and its mark failed: the second's content never went, the rest never
    # started. All four wait in SENDING for the sweeper; the first is the one that can go twice.
    assert len(watching_sink.messages) == 1
    assert {_status(row)[0] for row in rows} == {S.SENDING}
    assert not EmailMessage.objects.filter(pk__in=[r.pk for r in rows],
                                           sent_at__isnull=False).exists()
    monkeypatch.undo()
    # A new mark connection: sending goes on.
    again = _committed_messages(2, "after-broken-mark", watching_sink)
    assert sender.send_batch([row.pk for row in again]).sent == 2
    assert {_status(row)[0] for row in again} == {S.SENT}


@pytest.mark.django_db(transaction=True)
def test_a_message_refused_at_its_final_dot_fails_alone_and_the_rest_go_in_order(watching_sink):
    rows = _committed_messages(5, "refused-dot", watching_sink)
    refused = rows[2]
    watching_sink.refuse_data.add(refused.to_address)
    result = sender.send_batch([row.pk for row in rows])
    assert (result.sent, result.failed) == (4, 1)
    assert _status(refused)[:2] == (S.FAILED, "smtp_554")
    assert {_status(row)[0] for row in rows if row != refused} == {S.SENT}
    arrived = watching_sink.message_ids()
    for index, marked in enumerate(watching_sink.marked_on_arrival):
        assert marked == set(arrived[:index])


@pytest.mark.django_db(transaction=True)
def test_a_mark_connection_that_died_between_batches_is_replaced_before_anything_is_sent(
    watching_sink
):
    first = _committed_messages(2, "before-restart", watching_sink)
    assert sender.send_batch([row.pk for row in first]).sent == 2
    with connection.cursor() as cursor:  # as a server restart or an idle timeout would
        cursor.execute("SELECT pg_terminate_backend(%s)",
                       [handoff._local.connection.info.backend_pid])
    rows = _committed_messages(3, "after-restart", watching_sink)
    assert sender.send_batch([row.pk for row in rows]).sent == 3
    assert sorted(watching_sink.message_ids()) == sorted(row.message_id for row in rows)
    assert {_status(row)[0] for row in rows} == {S.SENT}
