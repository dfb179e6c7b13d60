"""Benchmark: the preference page against a bare one-query template page, same server, same load.

DESIGN.md's target: the preference page serves >= 0.5x the requests/s of a Django view that
renders a small template after one query, with p99 latency <= 2x the bare view's, at 20
connections, with persistent database connections (CONN_MAX_AGE).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/consenso_bench_portal \\
        .venv/bin/python bench/portal_load.py [--seconds 15] [--rounds 2] [--connections 20]

The database named in DATABASE_URL is dropped and created anew (it must not be one you use).
It is migrated and seeded (people with list memberships and consents, purposes with visibility
rules, a policy, the page enabled with an access rule), then gunicorn (2 sync workers,
DEBUG off, CONN_MAX_AGE=60 unless --conn-max-age) serves bench/portal_server.py: the project
plus the bare view. A client process of `--connections` threads (http.client) requests random
people's pages, then the bare view for random people, in interleaved rounds; each round's
rate and latencies are printed and the best round of each is compared. Before the load it
counts the page's queries (in process, Django's test client) so a miss can be traced.
"""

import argparse
import base64
import http.client
import os
import random
import secrets
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from scratch_db import setup_database  # noqa: E402 - bench/ is on sys.path

PLACES = [("IT", "EU"), ("DE", "EU"), ("FR", "EU"), ("ES", "EU"), ("GB", "UK"), ("US", "NA")]


def server_env(args) -> dict:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "DEBUG": "false",
           "SECRET_KEY": secrets.token_urlsafe(50), "ALLOWED_HOSTS": "127.0.0.1,localhost",
           "SITE_URL": f"http://127.0.0.1:{args.port}", "CONN_MAX_AGE": str(args.conn_max_age),
           "LOG_LEVEL": "WARNING",
           # Fresh throwaway keys: DEBUG off requires them (nothing sealed here outlives the run).
           "FIELD_ENCRYPTION_KEYS": "b1:" + base64.b64encode(secrets.token_bytes(32)).decode(),
           "BLIND_INDEX_KEY": base64.b64encode(secrets.token_bytes(32)).decode()}
    # Inline tasks and an in-process cache unless the caller gives a Redis.
    env.setdefault("REDIS_URL", "")
    return env


def seed(args) -> tuple[list[str], list[str]]:
    """People, lists, purposes, consents and the page's settings; returns page tokens and ids."""
    import django

    django.setup()
    from consents import services as consent_services
    from consents.models import Source, Verification
    from crm import services
    from crm.models import MarketingList
    from crm.tokens import make_token

    # Enabled before anyone exists, so the invitation run it starts has nobody to mail.
    consent_services.portal_settings_update(
        enabled=True, access_rule={"field": "region", "op": "in", "value": ["EU", "UK"]})
    consent_services.policy_publish(title="How we use your data", text="We keep what you give "
                                    "us to serve you, and nothing else, for as long as needed.")
    lists = [services.marketing_list_save(marketing_list=MarketingList(name=f"News {i}"))
             for i in range(args.lists)]
    purposes = []
    for i in range(args.purposes):
        rule = {"field": "region", "op": "eq", "value": "EU"} if i % 3 == 2 else None
        purposes.append(consent_services.purpose_create(
            key=f"purpose-{i}", name=f"Purpose {i}", kind="custom", title=f"Purpose {i}",
            text=f"What purpose {i} means, in a paragraph of plain words. " * 4,
            visibility_rule=rule))
    people = []
    for i in range(args.people):
        country, region = PLACES[i % len(PLACES)]
        people.append(services.person_create(data={
            "first_name": f"Name{i}", "last_name": f"Surname{i}",
            "email": f"person{i}@example.org", "country": country, "region": region,
            "email_opt_in": "single_opt_in_user" if i % 3 else "none"}, source="system"))
    for n, marketing_list in enumerate(lists):
        services.marketing_list_add(marketing_list=marketing_list, source="system",
                                    person_ids=[p.pk for p in people[n::2]])
    rng = random.Random(7)
    for person in people:
        for purpose in rng.sample(purposes, k=min(3, len(purposes))):
            grant = rng.choice([consent_services.consent_grant, consent_services.consent_revoke])
            grant(person=person, purpose=purpose, source=Source.IMPORT,
                  verified_by=Verification.NONE)
    # A later text for one purpose: some grants become outdated (the page flags them).
    consent_services.purpose_publish_version(purpose=purposes[0], title="Purpose 0",
                                             text="A changed text for purpose 0.")
    return ([make_token(p, purpose="portal") for p in people], [str(p.pk) for p in people])


def profile_page(token: str) -> None:
    """Count the page's queries once (warm) and print them: what a miss would be made of."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse

    client = Client(HTTP_HOST="127.0.0.1")
    url = reverse("preference-page", args=[token])
    client.get(url)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    print(f"preference page: HTTP {response.status_code}, {len(response.content)} bytes, "
          f"{len(queries)} queries (warm):")
    for q in queries:
        print(f"  {float(q['time']) * 1000:6.2f} ms  {q['sql'][:150]}")


def start_server(args, env) -> subprocess.Popen:
    server = subprocess.Popen(
        [str(ROOT / ".venv/bin/gunicorn"), "--chdir", str(ROOT / "bench"), "--pythonpath",
         str(ROOT), "--workers", str(args.workers), "--worker-class", "sync",
         "--bind", f"127.0.0.1:{args.port}", "--backlog", "2048", "--log-level", "warning",
         "portal_server:application"], env=env, cwd=ROOT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:  # e.g. the port was taken: never measure another server
            raise SystemExit(f"gunicorn exited with {server.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=2)
            conn.request("GET", "/bench/one-query/00000000-0000-4000-8000-000000000000/")
            conn.getresponse().read()
            return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("gunicorn did not start")


def load(port: int, paths: list[str], *, seconds: float, connections: int) -> dict:
    """`connections` threads, each on its own keep-alive connection (reopened when the server
    closes it, as gunicorn's sync workers do), requesting random paths for `seconds`."""
    stop = time.monotonic() + seconds
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors = [0] * connections

    def worker(n):
        rng = random.Random(n)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = latencies[n]
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:
                conn.request("GET", rng.choice(paths))
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    errors[n] += 1
                if response.will_close:
                    conn.close()
            except (OSError, http.client.HTTPException):
                errors[n] += 1
                conn.close()
                continue
            mine.append(time.perf_counter() - started)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(connections)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    every = sorted(t for per in latencies for t in per)
    if not every:
        return {"rate": 0.0, "p50": 0.0, "p99": 0.0, "n": 0, "errors": sum(errors)}
    return {"rate": len(every) / elapsed, "p50": statistics.median(every) * 1000,
            "p99": every[min(len(every) - 1, int(len(every) * 0.99))] * 1000,
            "n": len(every), "errors": sum(errors)}


def show(name: str, r: dict) -> None:
    print(f"  {name:<16} {r['rate']:8.0f} req/s   p50 {r['p50']:7.1f} ms   "
          f"p99 {r['p99']:7.1f} ms   ({r['n']} requests, {r['errors']} errors)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=1000)
    parser.add_argument("--purposes", type=int, default=8)
    parser.add_argument("--lists", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument("--conn-max-age", type=int, default=60)
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        raise SystemExit("Set DATABASE_URL to a scratch PostgreSQL database.")

    if not args.port:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            args.port = probe.getsockname()[1]
    env = server_env(args)
    os.environ.update(env)
    setup_database(url)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env,
                   check=True)
    started = time.monotonic()
    tokens, ids = seed(args)
    print(f"seeded {len(ids)} people, {args.purposes} purposes, {args.lists} lists in "
          f"{time.monotonic() - started:.0f} s")
    profile_page(tokens[0])
    from django.db import connections

    connections.close_all()

    page_paths = [f"/p/{t}/" for t in tokens]
    bare_paths = [f"/bench/one-query/{pk}/" for pk in ids]
    server = start_server(args, env)
    try:
        for paths in (page_paths, bare_paths):  # warm both workers' connections and caches
            load(args.port, paths, seconds=2, connections=args.connections)
        best = {"page": None, "bare": None}
        for round_no in range(1, args.rounds + 1):
            print(f"round {round_no} ({args.seconds:.0f} s each, {args.connections} "
                  f"connections, {args.workers} gunicorn workers, CONN_MAX_AGE="
                  f"{args.conn_max_age}):")
            last = {}
            for name, paths in (("page", page_paths), ("bare", bare_paths)):
                result = load(args.port, paths, seconds=args.seconds,
                              connections=args.connections)
                show("preference page" if name == "page" else "one-query view", result)
                if best[name] is None or result["rate"] > best[name]["rate"]:
                    best[name] = result
                last[name] = result
            # The machine is shared: a round's two halves ran back to back, so their ratio is
            # the least disturbed by other load (printed for reading; the verdict is unchanged).
            if last["bare"]["rate"] and last["bare"]["p99"]:
                print(f"  round {round_no} ratios page/bare: req/s "
                      f"{last['page']['rate'] / last['bare']['rate']:.2f}, "
                      f"p99 {last['page']['p99'] / last['bare']['p99']:.2f}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    page, bare = best["page"], best["bare"]
    print("best rounds:")
    show("preference page", page)
    show("one-query view", bare)
    rate_ratio = page["rate"] / bare["rate"] if bare["rate"] else 0.0
    p99_ratio = page["p99"] / bare["p99"] if bare["p99"] else float("inf")
    print(f"req/s ratio page/bare: {rate_ratio:.2f} (target >= 0.5) "
          f"{'OK' if rate_ratio >= 0.5 else 'MISS'}")
    print(f"p99 ratio page/bare:   {p99_ratio:.2f} (target <= 2.0) "
          f"{'OK' if p99_ratio <= 2.0 else 'MISS'}")


if __name__ == "__main__":
    main()
