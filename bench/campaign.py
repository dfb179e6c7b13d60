"""Benchmark: a campaign end to end, and the materialisation of a campaign's audience.

DESIGN.md's targets and issue 7's proof:
1. A campaign of --people people (default 100,000), end to end: `campaign_send` → the task
   `start_campaign` (materialise + fan-out) → `send_messages` batches (claim, people lock, gateway
   re-check, render at hand-off, SMTP, mark) on ONE real worker (`--pool=prefork
   --concurrency=2`) into an aiosmtpd sink, timed from `campaign_send` to the last message at the
   sink; vs a bare smtplib loop in 2 processes building and sending the same messages (same
   subject, text and HTML, merged per person, footer link, List-Unsubscribe, Message-IDs) over
   one reused connection each, into the same sink. Target: ours >= 0.8x bare.
2. The worker's peak memory (parent + pool children, VmRSS from /proc, sampled every 0.25 s)
   for a campaign of --people / 5 and one of --people: it should stay flat as the audience grows.
3. `materialise(campaign_id)` (the audience fixed as chunks of person ids, packed 16 bytes each
   in (campaign, seq) rows, from which the fan-out later writes outbox rows chunk by chunk)
   over a list of --materialise people (default 1,000,000) vs a plain `INSERT INTO
   bench_audience (person_id) SELECT …` of the same ids (the very SELECT materialise runs,
   Django's SQL of audience.eligible, into a table with one uuid column, no index, no
   constraint); best of 3 each, interleaved, rows
   deleted + VACUUM ANALYZE + CHECKPOINT before every run. Target: ours <= 2x. Above that (or
   with --explain), the script prints materialise's plan (EXPLAIN (ANALYZE, BUFFERS), rolled
   back).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/consenso_bench_campaign \\
    REDIS_URL=redis://127.0.0.1:6379/0 .venv/bin/python bench/campaign.py \\
        [--people 100000] [--materialise 1000000] [--quick]

The database named in DATABASE_URL is dropped and created anew (it must not be one you use).
People are written with one INSERT … SELECT generate_series each batch (not through services:
this measures sending, not creating people); 1 in 50 each is opted out by the contact (x2),
opted out by staff, single opt-in by staff (below the default accepted level `double`), `none`,
or processing stopped: 88% of the audience is eligible. Nobody has tracking consent (the
default), so no message carries a pixel: the baseline carries none either.
"""

import argparse
import email.utils
import hashlib
import hmac
import multiprocessing
import os
import secrets
import smtplib
import sys
import time
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from html import escape
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch_db import worker_bench_environment  # noqa: E402 - bench/ is on sys.path
from send_throughput import CRLF, FROM, SinkProcess, Worker, _check_sink  # noqa: E402

QUEUE = f"bench-campaign-{os.getpid()}"
SUBJECT = "Our spring newsletter, {{ first_name }}"
BODY_TEXT = ("Hello {{ first_name }},\n\n" + "What is new this spring at {{ company }}.\n" * 8
             + "\nRead more: https://example.com/spring\n")
BODY_HTML = ("<p>Hello {{ first_name }},</p>\n"
             + "<p>What is new this spring at {{ company }}.</p>\n" * 8
             + '<p><a href="https://example.com/spring">Read more</a></p>\n')


# --- set-up ----------------------------------------------------------------------------------

_PEOPLE = """
WITH p AS (
  INSERT INTO crm_person (id, kind, first_name, last_name, email, phone, company, country,
    region, stage, language, custom, email_opt_in, processing_stopped_at, locked_fields,
    portal_key_version, created_at, updated_at, card_number_bidx, card_number_mask,
    national_id_bidx, national_id_mask)
  SELECT gen_random_uuid(), 'contact', 'Reader' || i, 'Number' || i,
    %(prefix)s || i || '@example.com', '', 'Example Ltd', 'DE', '', 'new', '', '{}'::jsonb,
    CASE i %% 50 WHEN 0 THEN 'opt_out_contact' WHEN 1 THEN 'opt_out_contact'
      WHEN 2 THEN 'opt_out_user' WHEN 3 THEN 'single_opt_in_user' WHEN 4 THEN 'none'
      ELSE 'double_opt_in' END,
    CASE WHEN i %% 50 = 5 THEN now() END, '[]'::jsonb, 1, now(), now(), '', '', '', ''
  FROM generate_series(%(first)s, %(last)s) i
  RETURNING id)
INSERT INTO crm_listmembership (marketing_list_id, person_id, added_at, source)
SELECT %(list)s, id, now(), 'import' FROM p
"""


def plant_campaign(name: str, people: int):
    """A marketing list of `people` new people and a draft campaign to it (campaign_save)."""
    from django.db import connection

    from campaigns.campaign_send import campaign_save
    from campaigns.models import Campaign
    from crm.models import MarketingList

    started = time.perf_counter()
    marketing_list = MarketingList.objects.create(name=name)
    with connection.cursor() as cursor:
        for first in range(1, people + 1, 200_000):
            cursor.execute(_PEOPLE, {"prefix": f"{name}-", "first": first,
                                     "last": min(people, first + 199_999),
                                     "list": marketing_list.pk})
        cursor.execute("ANALYZE")  # as autovacuum would have by now: plans for the real sizes
    campaign = campaign_save(campaign=Campaign(name=name, subject=SUBJECT, body_html=BODY_HTML,
                                               body_text=BODY_TEXT), lists=[marketing_list])
    print(f"planted {people:,} people on list {name!r} in {time.perf_counter() - started:.1f} s",
          flush=True)
    return campaign


def eligible_people(campaign) -> list[tuple]:
    from campaigns import audience

    return list(audience.eligible(campaign).order_by("pk").values_list(
        "pk", "email", "first_name", "last_name", "company", "portal_key_version"))


# --- the bare baseline -----------------------------------------------------------------------

def _token(key: bytes, person_id, version: int, purpose: str) -> str:
    tag = hmac.new(key, f"{purpose}:{person_id}:{version}".encode(), hashlib.sha256)
    return f"{person_id.hex}-{tag.hexdigest()[:32]}"


def _bare_sender(port: int, layout: dict, people: list, done) -> None:
    """One process, one SMTP connection: for each person merge the fields into the laid-out
    subject/text/HTML (escaped in the HTML), sign their preference and unsubscribe links, build
    the message with the email stdlib and sendmail it."""
    key = secrets.token_bytes(32)
    site, campaign_id, domain = layout["site"], layout["campaign"], layout["domain"]
    smtp = smtplib.SMTP("127.0.0.1", port, timeout=10)
    for pk, to, first, last, company, version in people:
        values = {"first_name": first, "last_name": last, "full_name": f"{first} {last}".strip(),
                  "company": company, "email": to,
                  "preferences_url": f"{site}/p/{_token(key, pk, version, 'portal')}/"}
        subject, text, html = layout["subject"], layout["text"], layout["html"]
        for name, value in values.items():
            placeholder = "{{ " + name + " }}"
            subject = subject.replace(placeholder, value)
            text = text.replace(placeholder, value)
            html = html.replace(placeholder, escape(value))
        message = MIMEMultipart("alternative")
        message["Subject"], message["From"], message["To"] = subject, FROM, to
        message["Date"] = email.utils.formatdate(localtime=False)
        message["Message-ID"] = f"<c{campaign_id}.{pk.hex}@{domain}>"
        message["List-Unsubscribe"] = f"<{site}/u/{_token(key, pk, version, 'unsubscribe')}/>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        message.attach(MIMEText(text, "plain", "utf-8"))
        message.attach(MIMEText(html, "html", "utf-8"))
        smtp.sendmail("no-reply@consenso.local", [to], message.as_bytes(policy=CRLF))
    smtp.quit()
    done.put(len(people))


def layout_of(campaign) -> dict:
    """The campaign's subject and bodies in the email layout, merge fields left in: rendered
    once from the same templates (what any sender would do once per campaign)."""
    from django.conf import settings
    from django.template.loader import render_to_string
    from django.utils.safestring import mark_safe

    from campaigns.campaign_send import _message_domain

    context = {"site_url": settings.SITE_URL, "LANGUAGE_CODE": settings.LANGUAGE_CODE,
               "preferences_url": "{{ preferences_url }}", "subject": campaign.subject}
    html = render_to_string("emails/campaign-body.html",
                            {**context, "body": mark_safe(campaign.body_html)})  # noqa: S308
    text = render_to_string("emails/campaign-body.txt",
                            {**context, "body": campaign.body_text}).strip() + "\n"
    return {"subject": campaign.subject, "text": text, "html": html, "site": settings.SITE_URL,
            "campaign": campaign.pk, "domain": _message_domain()}


def run_bare(sink: SinkProcess, layout: dict, people: list, processes: int = 2) -> float:
    done = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=_bare_sender,
                                       args=(sink.port, layout, people[i::processes], done))
               for i in range(processes)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    sent = sum(done.get(timeout=1800) for _ in workers)
    elapsed = time.perf_counter() - started
    for worker in workers:
        worker.join()
    _check_sink(sink, len(people))
    assert sent == len(people)
    return len(people) / elapsed


# --- our path --------------------------------------------------------------------------------

def run_campaign(sink: SinkProcess, campaign, expected: int, concurrency: int) -> dict:
    """campaign_send on a fresh worker; returns msgs/s and the worker's peak memory."""
    from campaigns.campaign_send import campaign_send
    from campaigns.models import Campaign, CampaignStatus

    sink.reset()
    worker = Worker(concurrency=concurrency, queue=QUEUE, sink_port=sink.port, recheck=True)
    try:
        idle = sum(worker.rss_mib())
        peak, peak_parts, next_sample = idle, worker.rss_mib(), 0.0
        started = time.perf_counter()
        campaign_send(campaign=campaign)
        deadline = time.monotonic() + 3600
        while sink.stats()[0] < expected:
            assert time.monotonic() < deadline and worker.process.poll() is None, \
                worker.output()
            now = time.monotonic()
            if now >= next_sample:
                parts = worker.rss_mib()
                if sum(parts) > peak:
                    peak, peak_parts = sum(parts), parts
                next_sample = now + 0.25
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        deadline = time.monotonic() + 60  # the last batch's finalise and the campaign's finish
        while Campaign.objects.get(pk=campaign.pk).status != CampaignStatus.SENT:
            assert time.monotonic() < deadline, worker.output()
            time.sleep(0.1)
    finally:
        worker.stop()
    _check_sink(sink, expected)
    return {"rate": expected / elapsed, "elapsed": elapsed, "idle": idle, "peak": peak,
            "parts": peak_parts}


# --- materialisation -------------------------------------------------------------------------

def _timed(cursor, sql: str, params=None) -> float:
    started = time.perf_counter()
    cursor.execute(sql, params)
    return time.perf_counter() - started


def _fresh(cursor, table: str, where: str = "") -> None:
    cursor.execute(f"DELETE FROM {table} {where}")  # noqa: S608 - our table names
    cursor.execute(f"VACUUM ANALYZE {table}")
    cursor.execute("CHECKPOINT")


def bench_materialise(people: int, *, explain: bool) -> None:
    from django.db import connection

    from campaigns import audience
    from campaigns.campaign_send import materialise
    from campaigns.models import AudienceChunk
    from consents.selectors import consent_settings

    campaign = plant_campaign("materialise", people)
    chunks = AudienceChunk._meta.db_table
    select = audience.eligible(campaign, accepted=consent_settings().opt_in_accepted)
    select_sql, select_params = select.values("pk").order_by().query.sql_with_params()
    bare_sql = f"INSERT INTO bench_audience (person_id) {select_sql}"
    ours, bare, added, copied = [], [], 0, 0
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE bench_audience (person_id uuid)")
        print("baseline: " + cursor.mogrify(bare_sql, select_params).decode()
              + "  -- bench_audience: one uuid column, no index, no constraint, logged")
        for attempt in (1, 2, 3):
            _fresh(cursor, chunks, f"WHERE campaign_id = {campaign.pk}")
            started = time.perf_counter()
            added = materialise(campaign.pk)
            ours.append(time.perf_counter() - started)
            _fresh(cursor, "bench_audience")
            bare.append(_timed(cursor, bare_sql, select_params))
            copied = cursor.rowcount
            print(f"materialise run {attempt}: ours {ours[-1]:.2f} s ({added:,} people, "
                  f"chunked) | bare INSERT … SELECT {bare[-1]:.2f} s ({copied:,} rows)", flush=True)
    assert added == copied, (added, copied)
    ratio = min(ours) / min(bare)
    print(f"materialise over {people:,} people, {added:,} eligible (best of 3): ours "
          f"{min(ours):.2f} s, bare {min(bare):.2f} s -> {ratio:.2f}x (target <= 2x)", flush=True)
    if ratio > 2 or explain:
        explain_materialise(campaign, min(bare))


def _materialise_sql(campaign) -> tuple[str, list]:
    """The INSERT materialise() runs for `campaign` (run once, captured, rolled back)."""
    from django.db import connection, transaction

    from campaigns.campaign_send import materialise

    captured = []

    def capture(execute, sql, params, many, context):
        if sql.lstrip().upper().startswith("INSERT"):
            captured.append((sql, list(params)))
        return execute(sql, params, many, context)

    from campaigns.models import AudienceChunk

    with connection.execute_wrapper(capture):
        try:
            with transaction.atomic():
                AudienceChunk.objects.filter(campaign=campaign).delete()
                materialise(campaign.pk)
                raise _Rollback
        except _Rollback:
            pass
    return captured[-1]


class _Rollback(Exception):
    pass


def explain_materialise(campaign, bare_seconds: float) -> None:
    """Where materialise's time goes: its statement's plan with buffers (rolled back)."""
    import psycopg2

    from campaigns.models import AudienceChunk

    sql, params = _materialise_sql(campaign)
    table = AudienceChunk._meta.db_table
    print(f"\nmaterialise's statement: {sql}")
    raw = psycopg2.connect(os.environ["DATABASE_URL"])
    with raw.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table} WHERE campaign_id = %s", [campaign.pk])
    raw.commit()
    print(f"\nEXPLAIN (ANALYZE, BUFFERS), rolled back; bare baseline {bare_seconds:.2f} s:")
    with raw.cursor() as cursor:
        cursor.execute("SET work_mem = '256MB'")  # as materialise sets it for its statement
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
        for (line,) in cursor.fetchall():
            print("  " + line)
    raw.rollback()
    raw.close()


# --- main ------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=100_000,
                        help="the campaign's list; memory is also measured at a fifth of it "
                             "(0: skip the sending part)")
    parser.add_argument("--materialise", type=int, default=1_000_000,
                        help="people behind the materialisation benchmark (0: skip it)")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--batch", type=int, default=100, help="messages per task (>= 50)")
    parser.add_argument("--explain", action="store_true",
                        help="explain materialise's cost even when within target")
    parser.add_argument("--quick", action="store_true",
                        help="2,000 people and 20,000 to materialise: checks the script works")
    args = parser.parse_args()
    if args.quick:
        args.people, args.materialise = 2_000, 20_000
    worker_bench_environment("postgres://postgres@127.0.0.1:5432/consenso_bench_campaign",
                             batch=args.batch)
    sink = SinkProcess()  # forked before Django opens any connection

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, connections

    from config import celery_app

    celery_app.conf.task_default_queue = QUEUE  # campaign_send's task goes to our worker
    call_command("migrate", verbosity=0)
    print(f"PostgreSQL {connection.pg_version}, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, campaign of {args.people:,} people, {args.batch} per task, "
          f"1 worker --pool=prefork --concurrency={args.concurrency}; load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)

    if args.materialise:
        bench_materialise(args.materialise, explain=args.explain)
        with connection.cursor() as cursor:  # the deliveries start from an empty outbox
            cursor.execute("TRUNCATE campaigns_emailmessage CASCADE")
            cursor.execute("VACUUM ANALYZE campaigns_emailmessage")
        print(flush=True)

    runs = {}
    for size in (args.people // 5, args.people) if args.people else ():
        campaign = plant_campaign(f"campaign-{size}", size)
        people = eligible_people(campaign)
        layout = layout_of(campaign)
        connections.close_all()  # the bare senders fork from here
        bare = run_bare(sink, layout, people)
        ours = run_campaign(sink, campaign, len(people), args.concurrency)
        runs[size] = ours
        print(f"{size:,} people, {len(people):,} messages: bare smtplib (2 processes, email "
              f"stdlib) {bare:,.0f} msgs/s | ours end to end {ours['rate']:,.0f} msgs/s "
              f"({ours['elapsed']:.1f} s) -> ratio {ours['rate'] / bare:.2f} | worker RSS MiB "
              f"idle {ours['idle']:.0f}, peak {ours['peak']:.0f} (main, pool) {ours['parts']}",
              flush=True)
        runs[size]["bare"] = bare
    sink.stop()
    print("load average (1, 5, 15 min): {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
    if not runs:
        return
    small, large = runs[args.people // 5], runs[args.people]
    print(f"\ncampaign of {args.people:,} people, end to end (campaign_send -> last message at "
          f"the sink, 1 worker of concurrency {args.concurrency}): {large['rate']:,.0f} msgs/s vs "
          f"bare smtplib in 2 processes {large['bare']:,.0f} msgs/s -> ratio "
          f"{large['rate'] / large['bare']:.2f} (target >= 0.8), one run")
    print(f"worker peak RSS: {small['peak']:.0f} MiB at {args.people // 5:,} people, "
          f"{large['peak']:.0f} MiB at {args.people:,} ({large['peak'] - small['peak']:+.0f} MiB "
          f"for {args.people - args.people // 5:,} more people)")


if __name__ == "__main__":
    main()
