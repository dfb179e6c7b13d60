"""The worker wiring: a real Celery worker on Redis answers, with the project's settings."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from config import celery_app

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.services


@pytest.fixture
def redis_url():
    url = os.environ.get("REDIS_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("REDIS_URL must be set in CI (make test sets it)")
        pytest.skip("REDIS_URL not set: run through `make test`")
    return url


def test_worker_started_like_make_worker_answers_on_redis(redis_url):
    name = f"probe-{os.getpid()}@localhost"
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool=solo",
         "--concurrency=1", "-n", name, "--loglevel=WARNING", "--without-gossip",
         "--without-mingle", "--without-heartbeat"],
        cwd=ROOT, env={**os.environ, "REDIS_URL": redis_url},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    previous_broker = celery_app.conf.broker_url
    try:
        celery_app.conf.broker_url = redis_url
        replies = []
        deadline = time.monotonic() + 40
        while not replies and time.monotonic() < deadline:
            assert worker.poll() is None, worker.stdout.read()
            replies = celery_app.control.ping(destination=[name], timeout=1.0)
        assert replies and name in replies[0], "worker did not answer a ping over Redis"
        registered = celery_app.control.inspect(destination=[name], timeout=5).registered()
        assert name in registered
    finally:
        celery_app.conf.broker_url = previous_broker
        worker.terminate()
        worker.wait(timeout=20)
