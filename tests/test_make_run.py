"""The `make run` path of a newcomer: migrate an empty SQLite file, seed demo data, read the login.

Run in subprocesses, as `make run` does, so the settings are built from this environment (SQLite,
no Redis) rather than the PostgreSQL test database the rest of the suite uses.
"""

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def manage(*args: str, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, f"manage.py {' '.join(args)} failed:\n{result.stderr}"
    return result


def count_rows(database: Path, table: str) -> int:
    with sqlite3.connect(database) as connection:
        return connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # noqa: S608


def test_make_run_migrates_and_seeds_an_empty_sqlite_database_once(tmp_path):
    database = tmp_path / "run.sqlite3"
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{database}",
        # No Redis: tasks run inline and the cache is in memory, as on a fresh machine.
        "REDIS_URL": "",
        "SITE_URL": "http://127.0.0.1:8000",
    }
    # `make run` sets neither; the development defaults apply.
    env.pop("DEBUG", None)
    env.pop("EMAIL_URL", None)

    manage("migrate", "--noinput", env=env)
    first = manage("seed_demo", "--count", "30", env=env)

    assert "http://127.0.0.1:8000/admin/" in first.stdout
    assert "admin / " in first.stdout and "staff / " in first.stdout
    assert count_rows(database, "crm_person") == 30

    second = manage("seed_demo", "--count", "30", env=env)

    assert "Found existing demo data" in second.stdout
    assert "http://127.0.0.1:8000/admin/" in second.stdout
    assert count_rows(database, "crm_person") == 30
