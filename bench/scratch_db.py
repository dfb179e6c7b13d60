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
