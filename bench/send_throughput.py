"""Benchmark: sending through outbox + Celery worker + gateway re-check vs a bare smtplib loop.

DESIGN.md's targets: our path >= 0.8x a bare smtplib loop that builds and sends the same
messages with the same number of processes into the same local SMTP sink, and the gateway
re-check costs <= 10% (one set-based query per batch, >= 50 recipients per task, one reused SMTP
connection per batch).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/consenso_bench_send \\
    REDIS_URL=redis://127.0.0.1:6379/0 .venv/bin/python bench/send_throughput.py \\
        [--messages 20000] [--concurrency 2,4] [--repeat 2]

The database named in DATABASE_URL is dropped and created anew (it must not be one you use).
The sink (aiosmtpd, counting Message-IDs) runs in a process of its own. Each of our runs starts a
real worker (`--pool=prefork --concurrency=N`, DEBUG off) on a private queue, waits for it to
answer, then times from dispatching the tasks to the last row marked SENT. "No re-check" runs
the same worker with the sender's fresh read (gateway recheck + the proof query) replaced by a
stub that allows everyone: a bench-only monkeypatch. The outbox rows are reset to QUEUED between
runs. Rates are wall-clock: run it on a quiet machine; the best of --repeat runs is kept.
"""

import argparse
import email.utils
import multiprocessing
import os
import re
import secrets
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from scratch_db import worker_bench_environment  # noqa: E402 - bench/ is on sys.path

FROM = "Consenso <no-reply@consenso.local>"
CRLF = compat32.clone(linesep="\r\n")  # smtplib sends bytes as they are: SMTP wants CRLF
_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(<[^>]+>)", re.MULTILINE | re.IGNORECASE)


# --- the sink, in a process of its own -------------------------------------------------------

def _sink_main(port: int, control) -> None:
    import logging

    from aiosmtpd.controller import Controller

    logging.getLogger("mail.log").setLevel(logging.WARNING)  # per-command INFO lines cost CPU

    class Counting:
        def __init__(self):
            self.count, self.ids = 0, set()

        async def handle_DATA(self, server, session, envelope):
            found = _MESSAGE_ID.search(envelope.content)
            self.count += 1
            self.ids.add(found.group(1) if found else None)
            return "250 OK"

    handler = Counting()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    control.send("ready")
    while True:
        command = control.recv()
        if command == "stats":
            control.send((handler.count, len(handler.ids)))
        elif command == "reset":
            handler.count, handler.ids = 0, set()
            control.send("ok")
        else:
            controller.stop()
            return


class SinkProcess:
    def __init__(self):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.control, child = multiprocessing.Pipe()
        self.process = multiprocessing.Process(target=_sink_main, args=(self.port, child),
                                               daemon=True)
        self.process.start()
        assert self.control.recv() == "ready"

    def stats(self) -> tuple[int, int]:
        self.control.send("stats")
        return self.control.recv()

    def reset(self) -> None:
        self.control.send("reset")
        self.control.recv()

    def stop(self) -> None:
        self.control.send("stop")
        self.process.join(timeout=10)


# --- the bare baseline -----------------------------------------------------------------------

def _bare_sender(port: int, items: list, done) -> None:
    """One process: one connection, build each message (email.mime) and sendmail it."""
    smtp = smtplib.SMTP("127.0.0.1", port, timeout=10)
    for to, subject, text, html, message_id, headers in items:
        message = MIMEMultipart("alternative")
        message["Subject"], message["From"], message["To"] = subject, FROM, to
        message["Date"] = email.utils.formatdate(localtime=False)
        message["Message-ID"] = message_id
        for name, value in headers.items():
            message[name] = value
        message.attach(MIMEText(text, "plain", "utf-8"))
        message.attach(MIMEText(html, "html", "utf-8"))
        smtp.sendmail("no-reply@consenso.local", [to], message.as_bytes(policy=CRLF))
    smtp.quit()
    done.put(len(items))


def run_bare(sink: SinkProcess, items: list, processes: int) -> float:
    done = multiprocessing.Queue()
    shares = [items[i::processes] for i in range(processes)]
    workers = [multiprocessing.Process(target=_bare_sender, args=(sink.port, share, done))
               for share in shares]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    sent = sum(done.get(timeout=600) for _ in workers)
    elapsed = time.perf_counter() - started
    for worker in workers:
        worker.join()
    _check_sink(sink, len(items))
    assert sent == len(items)
    return len(items) / elapsed


# --- our path --------------------------------------------------------------------------------

def worker_main(argv: list[str]) -> None:
    """Entry point of the worker subprocess: our queue as the default one, optionally the
    no-op re-check, then `celery worker` with the given arguments."""
    queue, args = argv[0], argv[1:]
    from config import celery_app

    celery_app.conf.task_default_queue = queue
    if os.environ.get("BENCH_NOOP_RECHECK"):
        import django

        django.setup()
        from campaigns import gateway, sender

        allowed = gateway.Decision(True, gateway.Reason.ELIGIBLE)

        def no_recheck(rows):
            return ({row.pk: allowed for row in rows},
                    {row.person_id: (row.to_address, "double_opt_in", None) for row in rows})

        sender._fresh_decisions = no_recheck  # bench only: what the re-check costs
    celery_app.worker_main(args)


class Worker:
    def __init__(self, *, concurrency: int, queue: str, sink_port: int, recheck: bool):
        self.queue, self.name = queue, f"{queue}-{time.time_ns()}@localhost"
        env = {**os.environ, "EMAIL_URL": f"smtp://127.0.0.1:{sink_port}", "DEBUG": "false",
               "SECRET_KEY": secrets.token_urlsafe(50), "LOG_LEVEL": "WARNING"}
        env.pop("BENCH_NOOP_RECHECK", None)
        if not recheck:
            env["BENCH_NOOP_RECHECK"] = "1"
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed in stop()
        launch = (f"import sys; sys.path.insert(0, {str(BENCH)!r}); "
                  "import send_throughput; send_throughput.worker_main(sys.argv[1:])")
        self.process = subprocess.Popen(
            [sys.executable, "-c", launch, queue, "worker", "--pool=prefork",
             f"--concurrency={concurrency}", "-Q", queue, "-n", self.name, "--loglevel=WARNING",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)
        from config import celery_app

        deadline = time.monotonic() + 60
        while not celery_app.control.ping(destination=[self.name], timeout=0.5):
            assert self.process.poll() is None and time.monotonic() < deadline, self.output()

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()[-3000:]

    def rss_mib(self) -> list[float]:
        """Resident memory of each process of the worker (main first)."""
        group, sizes = os.getpgid(self.process.pid), []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(stat[2]) != group:
                    continue
                status = (entry / "status").read_text()
            except OSError:
                continue
            kib = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
            sizes.append((int(entry.name) != self.process.pid, kib / 1024))
        return [round(size, 1) for _child, size in sorted(sizes)]

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        self.log.close()


def reset_outbox() -> None:
    from django.db import connection

    from campaigns.models import EmailMessage, MessageStatus
    from config import clock

    EmailMessage.objects.update(status=MessageStatus.QUEUED, lease_until=clock.now(),
                                sent_at=None, allowed_by={}, reason="", attempts=0)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE campaigns_emailmessage")


def run_ours(sink: SinkProcess, ids: list[int], *, concurrency: int, recheck: bool,
             batch: int) -> tuple[float, list | None, list]:
    from campaigns.models import EmailMessage, MessageStatus
    from campaigns.tasks import send_messages

    reset_outbox()
    sink.reset()
    queue = f"bench-send-{os.getpid()}-{time.time_ns()}"
    worker = Worker(concurrency=concurrency, queue=queue, sink_port=sink.port, recheck=recheck)
    try:
        # Not done while any row is queued or sending: an index lookup, cheap enough to poll
        # (a scan of the table for "not sent" would steal the worker's CPU).
        pending = EmailMessage.objects.filter(
            status__in=[MessageStatus.QUEUED, MessageStatus.SENDING])
        started = time.perf_counter()
        for start in range(0, len(ids), batch):
            send_messages.apply_async([ids[start:start + batch]], queue=queue)
        deadline, warm = time.monotonic() + 1800, None
        while pending.exists():
            assert time.monotonic() < deadline, worker.output()
            if warm is None and sink.stats()[0] >= len(ids) // 10:
                warm = worker.rss_mib()  # after the first tenth: imports and caches are in
            time.sleep(0.1)
        elapsed = time.perf_counter() - started
        after = worker.rss_mib()
    finally:
        worker.stop()
    _check_sink(sink, len(ids))
    assert EmailMessage.objects.filter(status=MessageStatus.SENT).count() == len(ids)
    return len(ids) / elapsed, warm, after


def _check_sink(sink: SinkProcess, expected: int) -> None:
    deadline = time.monotonic() + 10
    while sink.stats()[0] < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    count, unique = sink.stats()
    assert count == unique == expected, (count, unique, expected)
    sink.reset()


# --- set-up ----------------------------------------------------------------------------------


def plant(messages: int) -> tuple[list[int], list]:
    """People who may receive a campaign, and one queued campaign message each, written through
    emails.enqueue (rendered from templates) in batched transactions; tasks dispatched later."""
    from django.db import transaction

    from campaigns import emails
    from campaigns.gateway import Kind
    from campaigns.models import EmailMessage
    from crm.models import EmailOptIn, Person

    people = [Person(id=uuid.uuid4(), first_name=f"Reader{i}", email=f"reader{i}@example.com",
                     email_opt_in=EmailOptIn.DOUBLE_OPT_IN) for i in range(messages)]
    Person.objects.bulk_create(people, batch_size=5000)
    started = time.perf_counter()
    for start in range(0, messages, 1000):
        with transaction.atomic():
            for person in people[start:start + 1000]:
                unsubscribe = emails.absolute_url(f"/u/{person.pk}/")
                emails.enqueue(
                    person=person, kind=Kind.CAMPAIGN, template="adhoc", campaign_id=1,
                    idempotency_key=f"campaign:1:{person.pk}", dispatch=False,
                    context={"subject": "Our spring newsletter",
                             "body": "Hello,\n\nWhat is new this spring.\n" * 8,
                             "preferences_url": emails.absolute_url(f"/p/{person.pk}/")},
                    headers={"List-Unsubscribe": f"<{unsubscribe}>",
                             "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"})
    elapsed = time.perf_counter() - started
    print(f"enqueued {messages:,} messages in {elapsed:.1f} s ({messages / elapsed:,.0f}/s, "
          "rendered from templates, one outbox row each)", flush=True)
    rows = list(EmailMessage.objects.order_by("pk").values_list(
        "pk", "to_address", "subject", "body_text", "body_html", "message_id", "headers"))
    ids = [row[0] for row in rows]
    return ids, [row[1:] for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--concurrency", default="2", help="comma list, e.g. 2,4")
    parser.add_argument("--batch", type=int, default=100, help="messages per task (>= 50)")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    if args.batch < 50:
        raise SystemExit("DESIGN.md's fan-out is at least 50 recipients per task.")
    worker_bench_environment("postgres://postgres@127.0.0.1:5432/consenso_bench_send",
                             batch=args.batch)
    sink = SinkProcess()  # forked before Django opens any connection

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, connections

    call_command("migrate", verbosity=0)
    print(f"PostgreSQL {connection.pg_version}, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, {args.messages:,} messages, {args.batch} per task", flush=True)
    ids, items = plant(args.messages)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # as autovacuum would have by now: plans for the real sizes
    connections.close_all()  # the bare senders fork from here
    results = {}
    for concurrency in [int(c) for c in args.concurrency.split(",")]:
        for attempt in range(1, args.repeat + 1):
            bare = run_bare(sink, items, concurrency)
            ours, warm, after = run_ours(sink, ids, concurrency=concurrency, recheck=True,
                                         batch=args.batch)
            noop, *_ = run_ours(sink, ids, concurrency=concurrency, recheck=False,
                                batch=args.batch)
            print(f"c={concurrency} run {attempt}: bare {bare:,.0f} msgs/s | ours {ours:,.0f} "
                  f"msgs/s | ours without re-check {noop:,.0f} msgs/s | worker RSS MiB "
                  f"(main, pool) after 10% {warm}, at the end {after}", flush=True)
            best = results.setdefault(concurrency, {"bare": 0, "ours": 0, "noop": 0})
            best.update(bare=max(best["bare"], bare), ours=max(best["ours"], ours),
                        noop=max(best["noop"], noop))
    sink.stop()
    print()
    for concurrency, best in results.items():
        print(f"concurrency {concurrency} (best of {args.repeat}): bare smtplib "
              f"{best['bare']:,.0f} msgs/s, outbox + worker + re-check {best['ours']:,.0f} "
              f"msgs/s -> ratio {best['ours'] / best['bare']:.2f} (target >= 0.8); "
              f"re-check cost {(best['noop'] - best['ours']) / best['noop']:+.1%} "
              f"of {best['noop']:,.0f} msgs/s without it (target <= 10%)")


if __name__ == "__main__":
    main()
