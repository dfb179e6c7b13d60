"""Settings read from the environment: a newcomer's defaults, production switches, loud failures.

Each case runs Django's setup in a fresh interpreter with exactly the environment given.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GOOD_KEY = "k3y-" + "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ-_"
PROBE = """
import json, django
django.setup()
from django.conf import settings
from config import celery_app
print(json.dumps({
    "engine": settings.DATABASES["default"]["ENGINE"],
    "db_name": str(settings.DATABASES["default"]["NAME"]),
    "eager": celery_app.conf.task_always_eager,
    "broker": celery_app.conf.broker_url,
    "email_backend": settings.EMAIL_BACKEND,
    "email_host": getattr(settings, "EMAIL_HOST", None),
    "cache": settings.CACHES["default"]["BACKEND"],
    "site_url": settings.SITE_URL,
    "debug": settings.DEBUG,
    "languages": [code for code, _ in settings.LANGUAGES],
    "locale_mw": "django.middleware.locale.LocaleMiddleware" in settings.MIDDLEWARE,
    "acks_late": celery_app.conf.task_acks_late,
    "reject_on_lost": celery_app.conf.task_reject_on_worker_lost,
}))
"""


def run_settings(env: dict) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ["PATH"], "DJANGO_SETTINGS_MODULE": "config.settings"}
    return subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env={**base, **env},
        capture_output=True, text=True, timeout=60,
    )


def probe(env: dict) -> dict:
    result = run_settings(env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_no_environment_runs_for_a_newcomer():
    found = probe({})
    assert found["engine"] == "django.db.backends.sqlite3"
    assert found["eager"] is True
    assert found["email_backend"] == "campaigns.mailbox.MailboxBackend"
    assert found["cache"].endswith("LocMemCache")
    assert found["debug"] is True
    assert found["site_url"] == "http://127.0.0.1:8000"


def test_environment_switches_to_postgres_redis_and_smtp():
    found = probe({
        "DATABASE_URL": "postgres://u:p@db.internal:5432/consenso",
        "REDIS_URL": "redis://cache.internal:6379/0",
        "EMAIL_URL": "smtp://mail.internal:1025",
        "SITE_URL": "https://crm.example.org/",
    })
    assert found["engine"] == "django.db.backends.postgresql"
    assert found["db_name"] == "consenso"
    assert found["eager"] is False
    assert found["broker"] == "redis://cache.internal:6379/0"
    assert found["cache"].endswith("RedisCache")
    assert found["email_backend"] == "django.core.mail.backends.smtp.EmailBackend"
    assert found["email_host"] == "mail.internal"
    assert found["site_url"] == "https://crm.example.org"
    # A killed worker must hand its message back, not lose it.
    assert found["acks_late"] is True and found["reject_on_lost"] is True


def test_languages_are_english_and_italian_with_locale_middleware():
    found = probe({})
    assert found["languages"] == ["en", "it"]
    assert found["locale_mw"] is True


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        (None, "SECRET_KEY is required"),
        ("short", "SECRET_KEY is malformed"),
        ("a" * 60, "SECRET_KEY is malformed"),
        ("dev-only-insecure-key-do-not-use-in-production-0123456789abcdef",
         "SECRET_KEY is malformed"),
    ],
)
def test_production_refuses_to_start_without_a_proper_secret(secret, message):
    env = {"DEBUG": "false"}
    if secret is not None:
        env["SECRET_KEY"] = secret
    result = run_settings(env)
    assert result.returncode != 0
    assert message in result.stderr


def test_production_starts_with_a_proper_secret():
    assert probe({"DEBUG": "false", "SECRET_KEY": GOOD_KEY})["debug"] is False


def test_malformed_database_url_fails_clearly():
    result = run_settings({"DATABASE_URL": "nonsense://x"})
    assert result.returncode != 0
    assert "'nonsense' isn't an available database backend" in result.stderr
