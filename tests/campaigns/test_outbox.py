"""The outbox and its sender, on PostgreSQL and a real SMTP server (aiosmtpd): enqueue writes
one row per intent, the gateway is asked again right before SMTP (one set-based query per
batch), every row ends SENT, SUPPRESSED(reason), FAILED(reason) or back in the queue."""

import contextlib
import socket
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils.html import escape

from campaigns import emails, handoff, sender
from campaigns.gateway import Kind, Reason
from campaigns.models import EmailMessage
from campaigns.models import MessageStatus as S
from campaigns.optin import Actor, opt_in_change
from campaigns.tasks import send_messages, sweep_outbox
from config import clock
from consents.models import Verification
from tests.campaigns.smtp_sink import Sink, free_port, running
from tests.factories import PersonFactory

pytestmark = pytest.mark.django_db


def _point_django_at(settings, port):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""


@contextlib.contextmanager
def serving(settings, server: Sink):
    """`server` running, and Django's mail sent to it; yields it."""
    with running(server) as port:
        _point_django_at(settings, port)
        yield server


@pytest.fixture
def sink(settings):
    with serving(settings, Sink()) as server:
        yield server


def _enqueue(person, key, **extra):
    return emails.enqueue(person=person, kind=extra.pop("kind", Kind.ADHOC), template="adhoc",
                          context={"subject": "Hello", "body": "A note from us."},
                          idempotency_key=key, **extra)


def _messages(n, tag="m"):
    return [_enqueue(PersonFactory(), f"{tag}:{i}") for i in range(n)]


def _opt_out_as_contact(person):
    opt_in_change(person=person, actor=Actor.CONTACT,
                  verified_by=Verification.EMAIL_CONFIRMATION)


def _status(row):
    row.refresh_from_db()
    return row.status, row.reason, row.attempts


# --- enqueue and rendering -------------------------------------------------------------------

def test_enqueue_twice_with_the_same_key_returns_the_first_row_and_dispatches_once(
        django_capture_on_commit_callbacks):
    person = PersonFactory()
    with django_capture_on_commit_callbacks() as callbacks:
        first = _enqueue(person, "welcome:1")
        again = _enqueue(person, "welcome:1")
    assert again.pk == first.pk and again.message_id == first.message_id
    assert EmailMessage.objects.filter(idempotency_key="welcome:1").count() == 1
    assert len(callbacks) == 1


def test_enqueue_writes_in_the_callers_transaction():
    person = PersonFactory()
    with pytest.raises(RuntimeError), transaction.atomic():
        _enqueue(person, "rolled-back")
        raise RuntimeError
    assert not EmailMessage.objects.filter(idempotency_key="rolled-back").exists()


def test_rendered_email_links_are_absolute_from_site_url(settings):
    settings.SITE_URL = "https://crm.example.com"
    person = PersonFactory(first_name="Ada")
    row = emails.enqueue(
        person=person, kind=Kind.ADHOC, template="adhoc", idempotency_key="links",
        context={"subject": "Your\n  data", "body": "See you.",
                 "preferences_url": emails.absolute_url("/p/token/")})
    link = "https://crm.example.com/p/token/"
    assert row.subject == "Your data"  # one header line
    assert f'href="{link}"' in row.body_html and link in row.body_text
    assert emails.relative_links(row.body_html) == []
    assert row.message_id.endswith("@crm.example.com>")
    assert row.status == S.QUEUED and row.to_address == person.email


@pytest.mark.parametrize(("html", "relative"), [
    ('<a href="/p/token/">x</a>', ["/p/token/"]),
    ("<img src='logo.png'>", ["logo.png"]),
    ('<a href="https://crm.example.com/">x</a> <a href="mailto:a@b.c">m</a>', []),
])
def test_relative_links_are_found(html, relative):
    assert emails.relative_links(html) == relative


def test_text_parts_are_not_html_escaped():
    row = emails.enqueue(person=PersonFactory(), kind=Kind.ADHOC, template="adhoc",
                         idempotency_key="esc",
                         context={"subject": "Q&A <today>", "body": "Tom & Jerry's \"plan\""})
    assert row.subject == "Q&A <today>"
    assert "Tom & Jerry's \"plan\"" in row.body_text
    assert "Tom &amp; Jerry" in row.body_html


# --- the sender ------------------------------------------------------------------------------

def test_batch_suppresses_a_contacts_opt_out_and_sends_the_others_with_their_proof(sink):
    rows = _messages(5)
    opted_out = rows[2]
    _opt_out_as_contact(opted_out.person)
    result = sender.send_batch([r.pk for r in rows])
    assert (result.sent, result.suppressed, result.failed) == (4, 1, 0)
    assert _status(opted_out) == (S.SUPPRESSED, Reason.OPTED_OUT_CONTACT, 0)
    assert opted_out.body_text  # kept for the log
    delivered = {m["Message-ID"]: m for m in sink.messages}
    assert set(delivered) == {r.message_id for r in rows if r is not opted_out}
    for row in rows:
        if row is opted_out:
            continue
        row.refresh_from_db()
        assert row.status == S.SENT and row.sent_at is not None and row.lease_until is None
        assert row.allowed_by == {"opt_in": "none", "event": None, "reason": "eligible"}
        mime = delivered[row.message_id]
        assert mime["To"] == row.to_address and mime["Subject"] == "Hello"
        parts = {part.get_content_type() for part in mime.walk()}
        assert {"text/plain", "text/html"} <= parts


def test_an_erasure_committed_mid_batch_keeps_the_address_out_of_the_sent_log(sink):
    """The batch read the address before the erasure blanked the log; marking the message sent
    afterwards must not write it back."""
    from crm import rights

    kept, erased = _messages(2, tag="erase")
    rights.person_erase(person=erased.person, source="staff")
    EmailMessage.objects.filter(pk__in=[kept.pk, erased.pk]).update(status=S.SENDING)
    with connection.cursor() as cursor:
        for row in (kept, erased):
            handoff.mark_sent(cursor, row, "read.before@example.org", "none", None)
    kept.refresh_from_db()
    erased.refresh_from_db()
    assert (kept.status, kept.to_address) == (S.SENT, "read.before@example.org")
    assert (erased.status, erased.to_address) == (S.SENT, "")


def test_allowed_by_names_the_opt_in_event_that_allowed_a_campaign(sink):
    person = PersonFactory()
    opt_in_change(person=person, actor=Actor.WEBFORM, verified_by=Verification.WEB_FORM)
    opt_in_change(person=person, actor=Actor.DOUBLE_OPT_IN,
                  verified_by=Verification.EMAIL_CONFIRMATION)
    row = _enqueue(person, "campaign:1", kind=Kind.CAMPAIGN, campaign_id=1)
    sender.send_batch([row.pk])
    row.refresh_from_db()
    from consents.models import ConsentEvent
    last = ConsentEvent.objects.filter(person_id=person.pk).latest("seq")
    assert row.status == S.SENT
    assert row.allowed_by == {"opt_in": "double_opt_in", "event": last.pk, "reason": "eligible"}


def test_opt_out_committed_after_enqueue_suppresses_the_queued_message(sink):
    row = _enqueue(PersonFactory(), "later")
    _opt_out_as_contact(row.person)
    sender.send_batch([row.pk])
    assert _status(row) == (S.SUPPRESSED, Reason.OPTED_OUT_CONTACT, 0)
    assert sink.messages == []


def test_headers_message_id_and_in_reply_to_reach_the_wire(sink):
    row = _enqueue(PersonFactory(), "reply", kind=Kind.REPLY, in_reply_to="<q1@contact.example>",
                   headers={"List-Unsubscribe": "<https://crm.example.com/u/x/>",
                            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"})
    sender.send_batch([row.pk])
    [mime] = sink.messages
    assert mime["Message-ID"] == row.message_id
    assert mime["In-Reply-To"] == mime["References"] == "<q1@contact.example>"
    assert mime["List-Unsubscribe"] == "<https://crm.example.com/u/x/>"
    assert mime["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def _gateway_queries(queries):
    return [q for q in queries if q["sql"].startswith("SELECT")
            and ("crm_person" in q["sql"] or "suppressedaddress" in q["sql"])]


def test_recheck_costs_the_same_queries_for_10_and_50_messages(sink, django_assert_max_num_queries):
    warm_up, small, large = _messages(1, "warm"), _messages(10, "small"), _messages(50, "large")
    sender.send_batch([r.pk for r in warm_up])  # first read creates the consent settings row
    with CaptureQueriesContext(connection) as ten:
        sender.send_batch([r.pk for r in small])
    with django_assert_max_num_queries(len(ten) + 40), \
            CaptureQueriesContext(connection) as fifty:
        sender.send_batch([r.pk for r in large])
    assert len(sink.messages) == 61
    # Only the per-message "mark it sent" grows with the batch (so a crash re-sends at most the
    # message in flight); the gateway's reads do not.
    assert len(fifty) - len(ten) == 40
    assert len(_gateway_queries(fifty.captured_queries)) == len(
        _gateway_queries(ten.captured_queries)) <= 3


def test_smtp_4xx_goes_back_to_the_queue_and_is_sent_when_due(sink):
    refused, other = _messages(2)
    sink.refuse[refused.to_address] = "451 Try again later"
    result = sender.send_batch([refused.pk, other.pk])
    assert result.retry_ids == [refused.pk] and result.retry_in == sender.backoff(1)
    assert _status(refused) == (S.QUEUED, "smtp_451", 1)
    assert _status(other)[0] == S.SENT  # the connection survived the refusal
    # Not due yet: a duplicate task changes nothing.
    assert sender.send_batch([refused.pk]).sent == 0
    del sink.refuse[refused.to_address]
    with clock.frozen(clock.now() + timedelta(seconds=sender.backoff(1) + 1)):
        assert sender.send_batch([refused.pk]).sent == 1
    assert _status(refused) == (S.SENT, "", 1)
    assert [m["To"] for m in sink.messages] == [other.to_address, refused.to_address]


def test_smtp_5xx_fails_at_once_without_retry(sink):
    row, = _messages(1)
    sink.refuse[row.to_address] = "550 No such user"
    result = sender.send_batch([row.pk])
    assert (result.failed, result.retry_ids) == (1, [])
    assert _status(row) == (S.FAILED, "smtp_550", 0)


def test_transient_failures_give_up_after_max_attempts_with_backoff(sink):
    row, = _messages(1)
    sink.refuse[row.to_address] = "451 Try again later"
    now = clock.now()
    waits = []
    for _attempt in range(sender.MAX_ATTEMPTS):
        with clock.frozen(now):
            result = sender.send_batch([row.pk])
        waits.append(result.retry_in)
        now += timedelta(seconds=result.retry_in or 0)
    assert waits == [60, 120, 240, 480, 0]
    assert _status(row) == (S.FAILED, "retries_exhausted:smtp_451", sender.MAX_ATTEMPTS)
    assert sink.messages == []


def test_send_task_schedules_the_retry_instead_of_sending_early(sink):
    row, = _messages(1)
    sink.refuse[row.to_address] = "451 Try again later"
    send_messages.delay([row.pk])  # eager: its retry runs at once and finds the row not due
    assert _status(row) == (S.QUEUED, "smtp_451", 1)


def test_unreachable_server_puts_the_batch_back_in_the_queue(settings):
    _point_django_at(settings, free_port())  # nothing listens there
    rows = _messages(3)
    result = sender.send_batch([r.pk for r in rows])
    assert sorted(result.retry_ids) == sorted(r.pk for r in rows)
    assert {_status(r) for r in rows} == {(S.QUEUED, "smtp_connect", 1)}


def test_a_server_that_never_answers_times_out_after_email_timeout(settings):
    # A listening socket nobody accepts from: the client connects, then waits for a greeting.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        _point_django_at(settings, silent.getsockname()[1])
        settings.EMAIL_TIMEOUT = 1
        row, = _messages(1)
        sender.send_batch([row.pk])
    assert _status(row) == (S.QUEUED, "smtp_connect", 1)


@pytest.mark.django_db(transaction=True)
def test_a_row_another_transaction_holds_during_the_claim_is_retried_not_stranded(sink):
    import psycopg2
    from django.db import connection

    rows = _messages(3)  # committed: their send task ran at once (eager); queue them again
    EmailMessage.objects.filter(pk__in=[r.pk for r in rows]).update(
        status=S.QUEUED, sent_at=None, lease_until=None, allowed_by={})
    held = rows[1]
    settings_dict = connection.settings_dict
    other = psycopg2.connect(dbname=settings_dict["NAME"], user=settings_dict["USER"],
                             host=settings_dict["HOST"], port=settings_dict["PORT"])
    try:  # as an erasure blanking the person's log rows holds them until it commits
        with other.cursor() as cursor:
            cursor.execute("SELECT id FROM campaigns_emailmessage WHERE id = %s FOR UPDATE",
                           [held.pk])
        result = sender.send_batch([r.pk for r in rows])
    finally:
        other.rollback()
        other.close()
    assert result.sent == 2 and result.retry_ids == [held.pk]
    assert result.retry_in == sender.BUSY_RETRY_SECONDS
    assert _status(held) == (S.QUEUED, "", 0)
    assert sender.send_batch(result.retry_ids).sent == 1  # the retry the task schedules
    # A row another worker has taken by then is not due any more: no retry loop.
    assert sender.send_batch([held.pk]).retry_ids == []


class SessionCountingSink(Sink):
    """Counts SMTP sessions: each client greets with one EHLO per connection."""

    def __init__(self):
        super().__init__()
        self.sessions = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.sessions += 1
        session.host_name = hostname
        return responses


def test_batches_of_one_thread_share_one_smtp_session_while_the_server_answers(settings):
    server = SessionCountingSink()
    with running(server) as port:
        _point_django_at(settings, port)
        first, second = _messages(3, "a"), _messages(3, "b")
        assert sender.send_batch([r.pk for r in first]).sent == 3
        assert sender.send_batch([r.pk for r in second]).sent == 3
    assert server.sessions == 1 and len(server.messages) == 6


def test_a_kept_session_whose_server_restarted_is_replaced_and_nothing_is_lost(settings):
    first_server, second_server = SessionCountingSink(), SessionCountingSink()
    with running(first_server) as port:
        _point_django_at(settings, port)
        assert sender.send_batch([r.pk for r in _messages(2, "a")]).sent == 2
    # The same address, a new server: the kept session is dead; a new one, and all is sent.
    with running(second_server, port):
        rows = _messages(2, "b")
        assert sender.send_batch([r.pk for r in rows]).sent == 2
    assert second_server.sessions == 1
    assert {m["Message-ID"] for m in second_server.messages} == {r.message_id for r in rows}


def test_a_session_is_not_kept_after_a_batch_in_which_a_hand_off_failed(settings):
    server = SessionCountingSink()
    with running(server) as port:
        _point_django_at(settings, port)
        rows = _messages(2, "a")
        server.refuse[rows[0].to_address] = "550 No such user"
        result = sender.send_batch([r.pk for r in rows])
        assert (result.sent, result.failed) == (1, 1)
        assert sender.send_batch([r.pk for r in _messages(1, "b")]).sent == 1
    assert server.sessions == 2


def test_a_kept_session_past_its_time_is_replaced(settings, monkeypatch):
    server = SessionCountingSink()
    with running(server) as port:
        _point_django_at(settings, port)
        assert sender.send_batch([r.pk for r in _messages(1, "a")]).sent == 1
        monkeypatch.setattr(sender, "KEEP_SMTP_SECONDS", 0)
        sender._kept_smtp.used_at -= 1
        assert sender.send_batch([r.pk for r in _messages(1, "b")]).sent == 1
    assert server.sessions == 2


def test_a_kept_session_that_no_longer_answers_is_replaced(settings):
    server = SessionCountingSink()
    with running(server) as port:
        _point_django_at(settings, port)
        assert sender.send_batch([r.pk for r in _messages(1, "a")]).sent == 1
        # As if the server had timed the idle session out.
        sender._kept_smtp.backend.connection.sock.shutdown(socket.SHUT_RDWR)
        assert sender.send_batch([r.pk for r in _messages(1, "b")]).sent == 1
    assert server.sessions == 2 and len(server.messages) == 2


# --- the sweeper -----------------------------------------------------------------------------

def test_sweeper_resends_a_row_whose_worker_died_once_its_lease_ran_out(sink, settings):
    row, = _messages(1)
    # A worker claims the row, then dies before handing it to SMTP.
    claimed = sender._claim([row.pk], sender._Lease.start())
    assert [r.pk for r in claimed] == [row.pk] and _status(row)[0] == S.SENDING
    assert sweep_outbox.delay().get() == 0  # the lease still runs
    assert sender.send_batch([row.pk]).sent == 0  # nor can another worker take it
    later = clock.now() + timedelta(seconds=settings.OUTBOX_LEASE_SECONDS + 1)
    with clock.frozen(later):
        assert sweep_outbox.delay().get() == 1  # eager: re-dispatched and sent
    assert _status(row)[0] == S.SENT
    assert sink.message_ids() == [row.message_id]


def test_a_row_marked_by_a_worker_that_then_died_is_sent_and_never_claimed_again(sink, settings):
    row, = _messages(1)
    lease = sender._Lease.start()
    claimed = sender._claim([row.pk], lease)
    with connection.cursor() as cursor:  # handed to SMTP and marked; then the worker dies
        handoff.mark_sent(cursor, claimed[0], row.to_address, "none", None)
    assert _status(row)[0] == S.SENT  # the mark itself makes it SENT
    later = clock.now() + timedelta(seconds=settings.OUTBOX_LEASE_SECONDS + 1)
    with clock.frozen(later):
        assert sender.send_batch([row.pk]).sent == 0  # never claimed again: it went
        assert list(sender.requeue_stuck()) == []
    assert _status(row)[0] == S.SENT
    assert sink.message_ids() == []


def test_the_mark_turns_only_a_claimed_row_sent(sink):
    claimed, changed = _messages(2, tag="mark-state")
    rows = sender._claim([claimed.pk, changed.pk], sender._Lease.start())
    EmailMessage.objects.filter(pk=changed.pk).update(status=S.SUPPRESSED, reason="erased")
    with connection.cursor() as cursor:
        for row in rows:
            handoff.mark_sent(cursor, row, row.to_address, "none", None)
    assert _status(claimed)[:2] == (S.SENT, "")
    assert _status(changed)[:2] == (S.SUPPRESSED, "erased")  # its state kept; the hand-off
    assert EmailMessage.objects.get(pk=changed.pk).sent_at is not None  # recorded all the same


def test_sweeper_finishes_a_row_an_earlier_version_marked_but_left_sending(sink, settings):
    """Before the mark turned rows SENT, a batch did so at its end: a worker that died first
    left its marked rows SENDING."""
    row, = _messages(1)
    EmailMessage.objects.filter(pk=row.pk).update(
        status=S.SENDING, sent_at=clock.now(), lease_until=clock.now())
    later = clock.now() + timedelta(seconds=settings.OUTBOX_LEASE_SECONDS + 1)
    with clock.frozen(later):
        assert sender.send_batch([row.pk]).sent == 0
        assert list(sender.requeue_stuck()) == []
    assert _status(row)[0] == S.SENT
    assert sink.message_ids() == []


def test_sweeper_dispatches_rows_whose_broker_message_was_lost_in_batches(sink, settings):
    settings.OUTBOX_BATCH_SIZE = 25
    rows = _messages(60)  # dispatched on commit, which never comes here: as if lost
    later = clock.now() + timedelta(seconds=settings.OUTBOX_LEASE_SECONDS + 1)
    with clock.frozen(later):
        fresh = _enqueue(PersonFactory(), "fresh")  # just enqueued: its task is on its way
        batches = list(sender.requeue_stuck())
        for batch in batches:
            sender.send_batch(batch)
    assert [len(b) for b in batches] == [25, 25, 10]
    assert fresh.pk not in {pk for batch in batches for pk in batch}
    assert len(set(sink.message_ids())) == 60
    assert not EmailMessage.objects.filter(pk__in=[r.pk for r in rows]).exclude(
        status=S.SENT).exists()


# --- the log in the staff UI -----------------------------------------------------------------

def test_admin_lists_the_mail_log_read_only(admin_client_, sink):
    rows = _messages(2)
    _opt_out_as_contact(rows[0].person)
    sender.send_batch([r.pk for r in rows])
    listing = admin_client_.get("/admin/campaigns/emailmessage/?status=suppressed")
    assert listing.status_code == 200
    assert Reason.OPTED_OUT_CONTACT in listing.content.decode()
    detail = admin_client_.get(f"/admin/campaigns/emailmessage/{rows[1].pk}/change/")
    assert detail.status_code == 200 and escape(rows[1].message_id) in detail.content.decode()
    assert admin_client_.get("/admin/campaigns/emailmessage/add/").status_code == 403
    assert admin_client_.post(f"/admin/campaigns/emailmessage/{rows[1].pk}/delete/",
                              {"post": "yes"}).status_code == 403


def test_a_person_link_is_the_reversed_url_of_their_token_whatever_the_site_and_prefix(settings):
    from django.urls import reverse, set_script_prefix

    from campaigns.emails import absolute_url, person_link
    from crm.tokens import make_token

    person = PersonFactory()

    def expected(url_name, purpose):
        return absolute_url(reverse(url_name, args=[make_token(person, purpose=purpose)]))

    for url_name, purpose in (("preference-page", "portal"),
                              ("one-click-unsubscribe", "unsubscribe")):
        assert person_link(person, url_name=url_name, purpose=purpose) == expected(url_name,
                                                                                  purpose)
    settings.SITE_URL = "https://crm.example.org"
    set_script_prefix("/consenso/")
    try:
        link = person_link(person, url_name="preference-page", purpose="portal")
        assert link.startswith("https://crm.example.org/consenso/p/")
        assert link == expected("preference-page", "portal")
    finally:
        set_script_prefix("/")
