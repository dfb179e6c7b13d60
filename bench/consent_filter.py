"""Benchmark: the staff people list filtered by consent x opt-in over 1,000,000 people.

DESIGN.md's target: first page < 50 ms, count < 200 ms. The queries are the staff list's:

    rule = {"all": [{"consent": "news", "state": "granted"},
                     {"opt_in": ["double_opt_in", "single_opt_in_user"]}]}
    Person.objects.filter(rules.to_q(rule)).order_by("-created_at")[:50]  # also select_related
    Person.objects.filter(rules.to_q(rule)).count()

plus the exact SQL the admin change list runs for the same rule as a segment (it adds `-pk` to
the ordering and `select_related("owner")`), captured from PersonAdmin's ChangeList for a
request filtered by that segment, and the whole change-list page (when the project's URLs
load). Rows marked [id] measure the proposed compilation (the purpose key resolved to its id
when the rule is compiled, `proposed_q` below); `count<=1001` a count capped for the admin's
paginator; `selective page` a rarer rule (about 0.25% of people).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/consenso_bench_consent \\
        .venv/bin/python bench/consent_filter.py [--people 1000000] [--reload] [--runs 7] \\
        [--candidate "CREATE INDEX person_opt_in_id ON crm_person (email_opt_in, id)"]...

The database in DATABASE_URL is created if missing and migrated; nothing is dropped. People and
their consents (3 purposes each) are loaded once with COPY and reused while the counts match
(`--reload` loads them again). The scenarios: with our indexes; without `consent_purpose_state`
and the `email_opt_in` indexes (dropped inside a transaction that is rolled back); with each
`--candidate` index (created inside a transaction that is rolled back). They take turns for
`--rounds` rounds of `--runs` timed runs (after a warm-up) and each figure is the median of the
pooled runs. A CPU reference query runs in each scenario too: absolute milliseconds depend on
the machine and its load, so both are printed.
"""

import argparse
import base64
import io
import os
import random
import secrets
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RULE = {"all": [{"consent": "news", "state": "granted"},
                {"opt_in": ["double_opt_in", "single_opt_in_user"]}]}
PAGE = 50
TARGET_PAGE_MS, TARGET_COUNT_MS = 50.0, 200.0
# The indexes this filter is meant to use (consents/models.py, crm/models.py db_index=True).
OUR_INDEXES = ("consent_purpose_state", "crm_person_email_opt_in_8991f683",
               "crm_person_email_opt_in_8991f683_like")

PURPOSES = [  # key, name, kind, state weights (granted, revoked, pending, unknown)
    ("news", "Newsletter", "custom", (30, 10, 10, 50)),
    ("tracking", "Engagement tracking", "engagement_tracking", (25, 15, 5, 55)),
    ("events", "Event invitations", "custom", (15, 5, 10, 70)),
]
STATES = ("granted", "revoked", "pending", "unknown")
OPT_INS = {"none": 35, "single_opt_in_user": 10, "single_opt_in_webform": 15,
           "double_opt_in": 22, "opt_out_user": 5, "opt_out_contact": 13}
FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Tim",
         "Margaret", "Dennis", "Hedy", "Linus", "Sophie", "John", "Katherine", "Guido", "Anita"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson",
        "Perlman", "Berners-Lee", "Hamilton", "Ritchie", "Lamarr", "Torvalds", "Wilson", "Borg"]
COMPANIES = ["Analytical Engines", "Navy Labs", "Bletchley", "Mathematisch Centrum", "MIT",
             "Stanford", "IBM", "Bell Labs", "DEC", "CERN", "NASA", ""]
PLACES = [("IT", "EU", "it"), ("DE", "EU", "en"), ("FR", "EU", "en"), ("GB", "UK", "en"),
          ("US", "NA", "en"), ("BR", "LATAM", "en"), ("JP", "APAC", "en"), ("AE", "MEA", "en")]
STAGES = {"new": 35, "contacted": 25, "qualified": 15, "ready_to_buy": 5, "customer": 15,
          "inactive": 5}
OWNERS = 20
PERSON_COLUMNS = (
    "id", "kind", "first_name", "last_name", "email", "phone", "company", "country", "region",
    "stage", "language", "custom", "email_opt_in", "processing_stopped_at", "locked_fields",
    "portal_key_version", "created_at", "updated_at", "owner_id", "card_number_bidx",
    "card_number_mask", "national_id_bidx", "national_id_mask",
)
CONSENT_COLUMNS = ("person_id", "purpose_id", "state", "version_id", "updated_at")


# -- database and data ---------------------------------------------------------------------------

def ensure_database(url: str) -> None:
    import psycopg2

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    if name in ("", "postgres", "consenso", "consenso_dev", "template0", "template1"):
        raise SystemExit(f"Refusing to use the database {name!r}: name a scratch database.")
    admin = psycopg2.connect(host=parsed.hostname, port=parsed.port or 5432,
                             user=parsed.username, password=parsed.password, dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if cursor.fetchone() is None:
            cursor.execute(f'CREATE DATABASE "{name}"')
            print(f"created database {name}")
    admin.close()


def ensure_purposes() -> dict:
    """key -> (purpose id, current version id), created through the service."""
    from consents import services
    from consents.models import ConsentPurpose

    found = {}
    for key, name, kind, _weights in PURPOSES:
        purpose = ConsentPurpose.objects.filter(key=key).first()
        if purpose is None:
            purpose = services.purpose_create(
                key=key, name=name, kind=kind, title=name,
                text=f"We would like to use your email address for: {name.lower()}.")
        found[key] = (purpose.pk, services.current_version(purpose).pk)
    return found


def ensure_owners() -> list[int]:
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    ids = []
    for i in range(OWNERS):
        user, _ = user_model.objects.get_or_create(
            username=f"bench-owner-{i:02d}",
            defaults={"is_staff": True, "first_name": FIRST[i % len(FIRST)],
                      "last_name": LAST[i % len(LAST)]})
        ids.append(user.pk)
    return ids


def loaded(people: int) -> bool:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM crm_person")
        persons = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM consents_consent")
        consents = cursor.fetchone()[0]
    print(f"found {persons:,} people and {consents:,} consents")
    return persons == people and consents == people * len(PURPOSES)


def _weighted(rng: random.Random, table: dict, k: int) -> list:
    return rng.choices(list(table), weights=list(table.values()), k=k)


def generate(people: int, purposes: dict, owners: list[int], seed: int = 4):
    """Yield (people chunk, consents chunk) as COPY text, 100,000 people at a time.

    created_at is spread uniformly over two years and rows come in created_at order (the order
    they would have been inserted in); opt-in and each purpose's state are drawn independently.
    """
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    span = 2 * 365 * 86400
    offsets = sorted(rng.random() * span for _ in range(people))
    start = now - timedelta(seconds=span)
    owner_ids = [str(o) for o in owners]
    # (key, the purpose column, the version column of a known state)
    purpose_cols = [(key, f"\t{pid}\t", str(vid)) for key, (pid, vid) in purposes.items()]
    null = "\\N"
    chunk = 100_000
    for base in range(0, people, chunk):
        n = min(chunk, people - base)
        opt_ins = _weighted(rng, OPT_INS, n)
        stages = _weighted(rng, STAGES, n)
        firsts, lasts = rng.choices(FIRST, k=n), rng.choices(LAST, k=n)
        places, companies = rng.choices(PLACES, k=n), rng.choices(COMPANIES, k=n)
        states = {key: rng.choices(STATES, weights=weights, k=n)
                  for key, _name, _kind, weights in PURPOSES}
        person_buf, consent_buf = io.StringIO(), io.StringIO()
        for j in range(n):
            i = base + j
            pid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            created = start + timedelta(seconds=offsets[i])
            updated = created + timedelta(seconds=rng.random() * (now - created).total_seconds())
            created_s, updated_s = created.isoformat(sep=" "), updated.isoformat(sep=" ")
            first, last = firsts[j], lasts[j]
            country, region, language = places[j]
            email = "" if rng.random() < 0.03 else f"{first}.{last}.{i}@example.com".lower()
            stopped = updated_s if rng.random() < 0.002 else null
            owner = owner_ids[rng.randrange(len(owner_ids))] if rng.random() < 0.7 else null
            person_buf.write("\t".join((
                pid, "contact" if rng.random() < 0.4 else "lead", first, last, email,
                f"+39 02 {i:07d}" if rng.random() < 0.6 else "", companies[j], country, region,
                stages[j], language, "{}", opt_ins[j], stopped, "[]", "1", created_s, updated_s,
                owner, "", "", "", "\n",  # the four blind-index/mask columns, end of row
            )))
            for key, ids, version_id in purpose_cols:
                state = states[key][j]
                version = null if state == "unknown" else version_id
                consent_buf.write(f"{pid}{ids}{state}\t{version}\t{updated_s}\n")
        person_buf.seek(0)
        consent_buf.seek(0)
        yield person_buf, consent_buf


def _prefetched(chunks):
    """Generate the next chunk in a thread while the current one is copied (COPY releases the
    GIL while it sends). Yields chunks, and (None, seconds) after waiting for one."""
    import queue
    import threading

    ready: queue.Queue = queue.Queue(maxsize=1)

    def produce():
        try:
            for chunk in chunks:
                ready.put(chunk)
            ready.put(None)
        except Exception as error:  # handed to the consumer, which raises it
            ready.put(error)

    threading.Thread(target=produce, daemon=True).start()
    while True:
        started = time.perf_counter()
        chunk = ready.get()
        yield None, time.perf_counter() - started
        if isinstance(chunk, Exception):
            raise chunk
        if chunk is None:
            return
        yield chunk


def load(people: int, purposes: dict, owners: list[int]) -> None:
    """One transaction: truncate, drop the secondary indexes, COPY, re-create them; then
    VACUUM ANALYZE.

    Foreign keys are not re-checked row by row (session_replication_role=replica skips the
    deferred RI triggers); the rows are consistent by construction and checked once below.
    """
    from django.db import connection, transaction

    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL maintenance_work_mem = '1GB'")
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute("TRUNCATE crm_person CASCADE")
        # Plain indexes only (constraint-backed ones stay): re-created from pg_indexes verbatim.
        cursor.execute("""
            SELECT i.indexname, i.indexdef FROM pg_indexes i
            WHERE i.schemaname = 'public' AND i.tablename IN ('crm_person', 'consents_consent')
              AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                              WHERE c.conname = i.indexname AND c.contype IN ('p', 'u'))
            ORDER BY i.indexname""")
        indexes = cursor.fetchall()
        for name, _definition in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
        waited = 0.0
        for person_buf, consent_buf in _prefetched(generate(people, purposes, owners)):
            if person_buf is None:  # the generator has not produced the next chunk yet
                waited += consent_buf
                continue
            cursor.copy_expert(f"COPY crm_person ({', '.join(PERSON_COLUMNS)}) FROM STDIN",
                               person_buf)
            cursor.copy_expert(f"COPY consents_consent ({', '.join(CONSENT_COLUMNS)}) "
                               "FROM STDIN", consent_buf)
        copied = time.perf_counter() - started
        for _name, definition in indexes:
            cursor.execute(definition)
        cursor.execute("""
            SELECT count(*) FROM consents_consent c LEFT JOIN crm_person p ON p.id = c.person_id
            WHERE p.id IS NULL""")
        orphans = cursor.fetchone()[0]
        if orphans:
            raise RuntimeError(f"{orphans} consents without a person")
    print(f"loaded {people:,} people and {people * len(PURPOSES):,} consents in "
          f"{copied:.1f} s (of which {waited:.1f} s waiting for generated rows), "
          f"{len(indexes)} indexes rebuilt; "
          f"total {time.perf_counter() - started:.1f} s")
    vacuum()


def vacuum() -> None:
    from django.db import connection

    started = time.perf_counter()
    with connection.cursor() as cursor:  # autocommit: VACUUM cannot run in a transaction
        cursor.execute("VACUUM ANALYZE crm_person")
        cursor.execute("VACUUM ANALYZE consents_consent")
        cursor.execute("VACUUM ANALYZE consents_consentpurpose")
    print(f"VACUUM ANALYZE in {time.perf_counter() - started:.1f} s")


# -- measuring ------------------------------------------------------------------------------------

def timings_ms(func, runs: int) -> list[float]:
    func()  # warm-up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        func()
        times.append((time.perf_counter() - started) * 1000)
    return times


def captured_sql(func) -> list[str]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        func()
    return [q["sql"] for q in ctx.captured_queries]


def explain(sql: str) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")
        return "\n".join(row[0] for row in cursor.fetchall())


def raw(sql: str):
    def run():
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchall()
    return run


def admin_views(segment_id: int):
    """(the change list as PersonAdmin builds it, the whole change-list page as a request).

    The first builds the ChangeList for a superuser's request filtered by the segment and
    evaluates its page (the count runs inside), without URLs or templates; the second is the
    page served end to end, or None if the project's URLs do not load right now."""
    from django.contrib import admin
    from django.contrib.auth import get_user_model
    from django.test import Client, RequestFactory

    from crm.models import Person

    user, _ = get_user_model().objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True})
    model_admin = admin.site._registry[Person]
    request = RequestFactory().get("/admin/crm/person/", {"segment": str(segment_id)})
    request.user = user

    def changelist():
        return list(model_admin.get_changelist_instance(request).result_list)

    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)
    url = f"/admin/crm/person/?segment={segment_id}"

    def page():
        response = client.get(url)
        assert response.status_code == 200, response.status_code

    try:
        page()
    except Exception as error:  # e.g. a half-committed app elsewhere in the tree
        print(f"  (the change-list page is not measured: {type(error).__name__}: {error})")
        return changelist, None
    return changelist, page


def proposed_q(rule: dict, purpose_ids: dict):
    """The proposed compilation (see the report): the purpose key resolved to its id when the
    rule is compiled, so the EXISTS probes `consent_purpose_state` on all three columns.
    Mirrors rules.to_q for the forms used here (all, consent, opt_in)."""
    from django.db.models import Exists, OuterRef, Q

    from consents.models import Consent

    if "all" in rule:
        q = Q()
        for part in rule["all"]:
            q &= proposed_q(part, purpose_ids)
        return q
    if "opt_in" in rule:
        return Q(email_opt_in__in=rule["opt_in"])
    consents = Consent.objects.filter(person=OuterRef("pk"), purpose_id=purpose_ids[
        rule["consent"]])
    if rule["state"] == "unknown":
        return ~Q(Exists(consents.exclude(state="unknown")))
    return Q(Exists(consents.filter(state=rule["state"])))


class Queries:
    """Each query the staff list runs, built once (like one request), run by name."""

    CURRENT = ("page", "page+owner", "count", "admin page SQL", "admin count SQL")
    PROPOSED = ("page [id]", "page+owner [id]", "count [id]", "count<=1001 [id]")
    EXTRA = ("admin changelist", "admin request", "selective page", "selective page [id]")
    EXPLAINED = ("page", "admin page SQL", "count", "page [id]", "count [id]",
                 "count<=1001 [id]", "selective page", "selective page [id]")

    def __init__(self, segment_id: int, purpose_ids: dict):
        from consents import rules
        from crm.models import Person

        base = Person.objects.filter(rules.to_q(RULE))
        page = base.order_by("-created_at")
        ours = Person.objects.filter(proposed_q(RULE, purpose_ids))
        our_page = ours.order_by("-created_at")
        selective = Person.objects.filter(rules.to_q(SELECTIVE_RULE)).order_by("-created_at")
        our_selective = Person.objects.filter(
            proposed_q(SELECTIVE_RULE, purpose_ids)).order_by("-created_at")
        changelist, admin_request = admin_views(segment_id)
        admin_sql = [s for s in captured_sql(changelist)
                     if "crm_person" in s and "consents_consent" in s]

        self.run = {
            "page": lambda: list(page[:PAGE]),
            "page+owner": lambda: list(page.select_related("owner")[:PAGE]),
            "count": base.count,
            "admin page SQL": raw(next(s for s in admin_sql if "LIMIT" in s
                                       and "COUNT(" not in s)),
            "admin count SQL": raw(next(s for s in admin_sql if "COUNT(" in s)),
            "page [id]": lambda: list(our_page[:PAGE]),
            "page+owner [id]": lambda: list(our_page.select_related("owner")[:PAGE]),
            "count [id]": ours.count,
            "count<=1001 [id]": ours.order_by()[:CAP + 1].count,
            "admin changelist": changelist,
            "admin request": admin_request,
            "selective page": lambda: list(selective[:PAGE]),
            "selective page [id]": lambda: list(our_selective[:PAGE]),
        }
        self.run = {name: func for name, func in self.run.items() if func is not None}
        self.sql = {name: (captured_sql(self.run[name]) or [""])[-1] for name in self.EXPLAINED}

    def matches(self) -> tuple[int, int]:
        return self.run["count"](), self.run["count [id]"]()


CAP = 1000
# A rarer combination (about 0.25% of people): the first page has to walk further.
SELECTIVE_RULE = {"all": [{"consent": "tracking", "state": "pending"},
                          {"opt_in": ["opt_out_user"]}]}
CALIBRATION = "SELECT count(*) FROM generate_series(1, 1000000)"


def measure(label: str, queries: Queries, runs: int, *, explain_plans: bool = False) -> dict:
    """name -> list of timings (ms), plus matches, load averages and (if asked) plans."""
    load_before = os.getloadavg()[0]
    result = {name: timings_ms(func, runs) for name, func in queries.run.items()}
    result["calibration"] = timings_ms(raw(CALIBRATION), runs)
    result["matches"] = queries.matches()
    result["load"] = [load_before, os.getloadavg()[0]]
    if explain_plans:
        result["plans"] = {name: explain(queries.sql[name]) for name in queries.EXPLAINED}
    print(f"  measured: {label}", flush=True)
    return result


def index_defs(names) -> dict:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE indexname = ANY(%s)",
                       [list(names)])
        return dict(cursor.fetchall())


def without_our_indexes(queries: Queries, runs: int, *, explain_plans: bool) -> dict:
    """Drop our indexes inside a transaction, measure, roll back (and check they are back)."""
    from django.db import connection, transaction

    before = index_defs(OUR_INDEXES)
    with transaction.atomic():
        with connection.cursor() as cursor:
            for name in before:
                cursor.execute(f'DROP INDEX "{name}"')
        result = measure(f"without {', '.join(before)}", queries, runs,
                         explain_plans=explain_plans)
        transaction.set_rollback(True)
    after = index_defs(OUR_INDEXES)
    for name, definition in before.items():
        if after.get(name) != definition:  # not expected: the DROP was rolled back
            with connection.cursor() as cursor:
                cursor.execute(definition)
    return result


def with_candidate(queries: Queries, runs: int, sql: str, *, explain_plans: bool) -> dict:
    """Create a candidate index inside a transaction, measure, roll back."""
    from django.db import connection, transaction

    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL maintenance_work_mem = '1GB'")
            started = time.perf_counter()
            cursor.execute(sql)
            built = time.perf_counter() - started
            name = sql.split(" INDEX ", 1)[1].split()[0].strip('"')
            cursor.execute("SELECT pg_size_pretty(pg_relation_size(%s::regclass))", [name])
            size = cursor.fetchone()[0]
        result = measure(f"candidate {name} (built in {built:.1f} s, {size})", queries, runs,
                         explain_plans=explain_plans)
        transaction.set_rollback(True)
    return result


def verdicts(result: dict, pages: tuple, counts: tuple) -> str:
    page = max(result[name] for name in pages)
    count = max(result[name] for name in counts)
    return (f"first page {page:6.1f} ms {'PASS' if page < TARGET_PAGE_MS else 'FAIL'}, "
            f"count {count:7.1f} ms {'PASS' if count < TARGET_COUNT_MS else 'FAIL'}")


def print_plans(label: str, result: dict, names) -> None:
    for name in names:
        print(f"\n== EXPLAIN (ANALYZE, BUFFERS) {name} ({label})\n{result['plans'][name]}")


def print_table(scenarios: list[tuple[str, dict]]) -> None:
    width = 24
    print("\nmedian ms" + " " * 23 + "".join(f"{label[:width - 2]:>{width}}"
                                            for label, _ in scenarios))
    rows = [*Queries.CURRENT, *Queries.PROPOSED, *Queries.EXTRA, "calibration"]
    for name in rows:
        print(f"{name:<32}" + "".join(f"{r[name]:>{width - 3}.1f} ms" if name in r
                                      else f"{'n/a':>{width}}" for _, r in scenarios))
    print(f"{'matches (current / [id])':<32}" + "".join(
        f"{'{:,} / {:,}'.format(*r['matches']):>{width}}" for _, r in scenarios))
    print(f"{'load average (min - max)':<32}" + "".join(
        f"{'{:.1f} - {:.1f}'.format(*r['load']):>{width}}" for _, r in scenarios))
    print(f"\nTargets: first page < {TARGET_PAGE_MS:.0f} ms (worst of page, page+owner, admin "
          f"page SQL), count < {TARGET_COUNT_MS:.0f} ms")
    current = (("page", "page+owner", "admin page SQL"), ("count", "admin count SQL"))
    for label, r in scenarios:
        print(f"{label:<40} current: {verdicts(r, *current)}")
        print(f"{'':<40} [id]:    "
              f"{verdicts(r, ('page [id]', 'page+owner [id]'), ('count [id]',))}"
              f"; capped count {r['count<=1001 [id]']:.1f} ms")
    print("[id] = the purpose key resolved to its id when compiling (proposed rules.py); "
          f"count<={CAP + 1} = a count capped for the admin's paginator (proposed); "
          "calibration = "
          f"`{CALIBRATION}` (CPU reference for this machine and its load)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7, help="timed runs per round")
    parser.add_argument("--rounds", type=int, default=2,
                        help="times the scenarios take turns (their timings are pooled)")
    parser.add_argument("--reload", action="store_true", help="load the people again")
    parser.add_argument("--candidate", action="append", default=[],
                        help="a CREATE INDEX statement to measure (rolled back afterwards)")
    parser.add_argument("--no-drop", action="store_true",
                        help="skip the measurement without our indexes")
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL",
                         "postgres://postgres@127.0.0.1:5432/consenso_bench_consent")
    ensure_database(url)
    os.environ["DATABASE_URL"] = url
    os.environ.pop("REDIS_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("FIELD_ENCRYPTION_KEYS",
                          "bench:" + base64.b64encode(secrets.token_bytes(32)).decode())
    os.environ.setdefault("BLIND_INDEX_KEY", base64.b64encode(secrets.token_bytes(32)).decode())
    os.environ.setdefault("LOG_LEVEL", "WARNING")

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from consents.models import Segment

    call_command("migrate", verbosity=0)
    purposes = ensure_purposes()
    owners = ensure_owners()
    segment, _ = Segment.objects.update_or_create(name="bench: news granted x opt-in",
                                                  defaults={"rule": RULE})
    if args.reload or not loaded(args.people):
        load(args.people, purposes, owners)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_user_tables WHERE relname IN "
                       "('crm_person', 'consents_consent') AND last_analyze IS NULL "
                       "AND last_autoanalyze IS NULL")
        if cursor.fetchone()[0]:
            vacuum()
        settings = {}
        for name in ("jit", "shared_buffers", "work_mem", "max_parallel_workers_per_gather"):
            cursor.execute(f"SHOW {name}")
            settings[name] = cursor.fetchone()[0]
    print(f"PostgreSQL {connection.pg_version}, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, {' '.join(f'{k}={v}' for k, v in settings.items())}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)

    queries = Queries(segment.pk, {key: pid for key, (pid, _v) in purposes.items()})
    print("\n== SQL of the admin change list (captured from PersonAdmin's ChangeList)")
    print(queries.sql["admin page SQL"])
    print(queries.sql["count"])
    # Scenarios take turns (rounds) so a change in the machine's load hits them all alike.
    merged: dict[str, dict] = {}
    for round_ in range(args.rounds):
        explain_plans = round_ == 0
        scenarios = [("with our indexes", lambda ep=explain_plans: measure(
            "with our indexes", queries, args.runs, explain_plans=ep))]
        if not args.no_drop:
            scenarios.append(("without our indexes", lambda ep=explain_plans: without_our_indexes(
                queries, args.runs, explain_plans=ep)))
        for sql in args.candidate:
            scenarios.append((f"+ {sql.split(' INDEX ', 1)[1].split()[0]}",
                              lambda sql=sql, ep=explain_plans: with_candidate(
                                  queries, args.runs, sql, explain_plans=ep)))
        for label, run in scenarios:
            result = run()
            into = merged.setdefault(label, {"plans": result.get("plans"),
                                             "matches": result["matches"], "load": []})
            for name, value in result.items():
                if isinstance(value, list):
                    into.setdefault(name, []).extend(value)
    results = [(label, {name: statistics.median(v) if isinstance(v, list) and name != "load"
                        else v for name, v in result.items()})
               for label, result in merged.items()]
    for result in results:
        result[1]["load"] = (min(result[1]["load"]), max(result[1]["load"]))

    print_plans("with our indexes", results[0][1], Queries.EXPLAINED)
    for label, result in results[1:]:
        print_plans(label, result, ("page", "count", "count [id]"))
    print(f"\nEach figure: median of {args.rounds} rounds x {args.runs} runs (after a warm-up "
          "per round), the scenarios taking turns.")
    print_table(results)


if __name__ == "__main__":
    main()
