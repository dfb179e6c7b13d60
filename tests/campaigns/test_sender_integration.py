"""The outbox end to end: PostgreSQL, Redis, a real Celery worker (prefork, 2 processes) and a
real SMTP server. Messages arrive exactly once; an opt-out committed while messages wait in the
queue suppresses them; a worker killed with SIGKILL mid-batch loses nothing and duplicates at
most one message per killed process (counted by Message-ID at the server)."""

import collections
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from django.db import connection, transaction

from campaigns import emails
from campaigns.gateway import Kind, Reason
from campaigns.models import EmailMessage
from campaigns.models import MessageStatus as S
from campaigns.optin import Actor, opt_in_change
from campaigns.tasks import sweep_outbox
from config import celery_app
from consents.models import Verification
from tests.campaigns.smtp_sink import Sink, running
from tests.conftest import TEST_BLIND_INDEX_KEY, TEST_KEYS
from tests.factories import PersonFactory

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]
DONE = (S.SENT, S.SUPPRESSED, S.FAILED)


@pytest.fixture
def queue():
    """A queue of this test's own on the shared Redis: no other session's worker takes our
    tasks, and ours takes none of theirs. Tasks are published for real (not run inline)."""
    url = os.environ.get("REDIS_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("REDIS_URL must be set in CI (make test sets it)")
        pytest.skip("REDIS_URL not set: run through `make test`")
    name = f"outbox-test-{os.getpid()}-{time.time_ns()}"
    previous = celery_app.conf.task_always_eager, celery_app.conf.task_default_queue
    celery_app.conf.task_always_eager, celery_app.conf.task_default_queue = False, name
    yield name
    celery_app.conf.task_always_eager, celery_app.conf.task_default_queue = previous
    import redis

    redis.Redis.from_url(url).delete(name)


class Worker:
    """A Celery worker (prefork, 2 processes) on the test database and our queue."""

    def __init__(self, queue: str, smtp_port: int, **env):
        db = connection.settings_dict
        auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
        self.queue, self.name = queue, f"{queue}-{time.time_ns()}@localhost"
        self.env = {**os.environ, **env,
                    "DATABASE_URL": f"postgres://{auth}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
                    "EMAIL_URL": f"smtp://127.0.0.1:{smtp_port}",
                    "FIELD_ENCRYPTION_KEYS": ",".join(TEST_KEYS),
                    "BLIND_INDEX_KEY": TEST_BLIND_INDEX_KEY}
        self.process = None
        # A file, not a pipe: a pipe nobody reads fills up and blocks the worker.
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed in stop()

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()[-5000:]

    def start(self) -> "Worker":
        # What `celery -A config worker` runs, with our queue as the default one as well, so
        # the tasks the worker itself sends (sweeps, retries) stay on it. Its own process
        # group: SIGKILL reaches the main process and its pool children.
        launch = ("import sys; from config import celery_app; "
                  "celery_app.conf.task_default_queue = sys.argv[1]; "
                  "celery_app.worker_main(sys.argv[2:])")
        self.process = subprocess.Popen(
            [sys.executable, "-c", launch, self.queue, "worker", "--pool=prefork",
             "--concurrency=2", "-Q", self.queue, "-n", self.name, "--loglevel=WARNING",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)
        wait_for(self._answers, "the worker to answer a ping", timeout=40)
        return self

    def _answers(self) -> bool:
        assert self.process.poll() is None, self.output()
        return bool(celery_app.control.ping(destination=[self.name], timeout=0.5))

    def kill(self) -> int:
        """SIGKILL the whole worker; returns how many processes died."""
        group = os.getpgid(self.process.pid)
        killed = len(_processes_in_group(group))
        os.killpg(group, signal.SIGKILL)
        self.process.wait(timeout=10)
        return killed

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(os.getpgid(self.process.pid), signal.SIGKILL)
                self.process.wait(timeout=10)
        print(self.output())  # pytest shows it when the test failed
        self.log.close()


def _processes_in_group(group: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == group:  # pgrp
                pids.append(int(entry.name))
    return pids


@pytest.fixture
def workers():
    started = []
    yield started
    for worker in started:
        worker.stop()


def wait_for(predicate, what: str, *, timeout: float = 30, every: float = 0.1, tick=None):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {_statuses()}"
        if tick:
            tick()
        time.sleep(every)


def _people(n):
    with transaction.atomic():  # one commit, not n
        return [PersonFactory(email=f"int{i}@example.org") for i in range(n)]


def _enqueue_all(people, tag, *, one_by_one=0):
    """The first `one_by_one` as single sends (a task each, on commit), the rest as a bulk send
    in one transaction (tasks of OUTBOX_BATCH_SIZE messages)."""
    rows = [_enqueue(p, f"{tag}:{i}") for i, p in enumerate(people[:one_by_one])]
    with transaction.atomic():
        bulk = [_enqueue(p, f"{tag}:{i}", dispatch=False)
                for i, p in enumerate(people[one_by_one:], start=one_by_one)]
        emails.dispatch(r.pk for r in bulk)
    return rows + bulk


def _enqueue(person, key, **extra):
    return emails.enqueue(person=person, kind=Kind.ADHOC, template="adhoc", idempotency_key=key,
                          context={"subject": "Hello", "body": "A note from us."}, **extra)


def _all_done(rows):
    ids = [r.pk for r in rows]
    return lambda: not EmailMessage.objects.filter(pk__in=ids).exclude(status__in=DONE).exists()


def _statuses():
    from django.db.models import Count

    return dict(EmailMessage.objects.values_list("status").annotate(n=Count("id")))


def test_every_enqueued_message_arrives_exactly_once(queue, workers):
    sink = Sink()
    with running(sink) as port:
        workers.append(Worker(queue, port).start())
        rows = _enqueue_all(_people(200), "a", one_by_one=20)
        wait_for(_all_done(rows), "every message to be sent")
    counts = collections.Counter(sink.message_ids())
    assert set(counts) == {r.message_id for r in rows}
    assert set(counts.values()) == {1}
    assert EmailMessage.objects.filter(status=S.SENT).count() == 200


def test_opt_out_committed_while_messages_wait_suppresses_them(queue, workers):
    sink = Sink()
    with running(sink) as port:
        people = _people(150)
        rows = _enqueue_all(people, "b")  # committed and dispatched; no worker runs yet
        for person in people[::5]:
            opt_in_change(person=person, actor=Actor.CONTACT,
                          verified_by=Verification.EMAIL_CONFIRMATION)
        workers.append(Worker(queue, port).start())
        wait_for(_all_done(rows), "every message to be sent or suppressed")
    opted_out = {p.email for p in people[::5]}
    arrived = [m["To"] for m in sink.messages]
    assert len(arrived) == 120 and not opted_out & set(arrived)
    suppressed = EmailMessage.objects.filter(status=S.SUPPRESSED)
    assert {r.to_address for r in suppressed} == opted_out
    assert set(suppressed.values_list("reason", flat=True)) == {Reason.OPTED_OUT_CONTACT}


def test_sigkill_mid_batch_loses_nothing_and_duplicates_at_most_one_per_killed_process(
        queue, workers):
    lease = 3  # short, so the sweeper takes back the dead worker's rows within the test
    sink = Sink(delay=0.02)
    with running(sink) as port:
        rows = _enqueue_all(_people(200), "c")
        first = Worker(queue, port, OUTBOX_LEASE_SECONDS=str(lease)).start()
        workers.append(first)
        wait_for(lambda: len(sink.messages) >= 40, "the worker to be mid-batch")
        killed = first.kill()
        arrived_before = len(sink.messages)
        assert arrived_before < 200, "the batch finished before the kill: slow the sink down"
        workers.append(Worker(queue, port, OUTBOX_LEASE_SECONDS=str(lease)).start())
        # As beat would: the sweeper re-dispatches the rows whose lease ran out.
        wait_for(_all_done(rows), "every message to be sent after the kill", timeout=40,
                 every=0.5, tick=lambda: sweep_outbox.delay())
    counts = collections.Counter(sink.message_ids())
    duplicates = sum(n - 1 for n in counts.values())
    assert set(counts) == {r.message_id for r in rows}  # nothing lost
    assert EmailMessage.objects.filter(status=S.SENT).count() == 200
    assert killed == 3 and duplicates <= 2, (killed, duplicates)  # one per killed pool process
