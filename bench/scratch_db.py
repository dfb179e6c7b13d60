"""The benchmarks' scratch database: dropped and created anew for each run (never one you use)."""

from urllib.parse import urlparse


def setup_database(url: str) -> None:
    import psycopg2

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    if name in ("", "postgres", "consenso", "template0", "template1"):
        raise SystemExit(f"Refusing to drop the database {name!r}: name a scratch database.")
    admin = psycopg2.connect(host=parsed.hostname, port=parsed.port or 5432,
                             user=parsed.username, password=parsed.password, dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()


def worker_bench_environment(default_url: str, *, batch: int) -> str:
    """For a benchmark of the outbox with a real worker: a fresh scratch database (DATABASE_URL,
    else `default_url`), the environment the worker inherits (throwaway encryption keys, quiet
    logs, the batch size), and a Redis URL required. Returns the database URL."""
    import base64
    import os
    import secrets

    url = os.environ.get("DATABASE_URL", default_url)
    if not os.environ.get("REDIS_URL"):
        raise SystemExit("REDIS_URL is required: the measured path is a real worker.")
    setup_database(url)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("FIELD_ENCRYPTION_KEYS",
                          "bench:" + base64.b64encode(secrets.token_bytes(32)).decode())
    os.environ.setdefault("BLIND_INDEX_KEY", base64.b64encode(secrets.token_bytes(32)).decode())
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ["OUTBOX_BATCH_SIZE"] = str(batch)
    return url
