"""The container setup keeps its promises: `docker compose up` starts the six services of the
design, wired only with environment names that settings actually read, and every such name is
documented in `.env.example`. These tests read files; they need no database and no Docker engine.
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
APP_SERVICES = ("web", "worker", "beat")
REQUIRED_APP_ENV = ("DATABASE_URL", "REDIS_URL", "EMAIL_URL", "SECRET_KEY", "SITE_URL")

# env.str("NAME", ...), env.bool("NAME"), env.db("NAME"), env("NAME") and the like.
_ENV_READ = re.compile(r"\benv(?:\.[a-z_]+)?\(\s*[\"']([A-Z][A-Z0-9_]*)[\"']")


def _settings_env_names():
    names = set(_ENV_READ.findall((ROOT / "config" / "settings.py").read_text()))
    assert names, "found no env reads in config/settings.py: has the reading style changed?"
    return names


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _command(service):
    """A service's command as one string, whether written as a list or as a string."""
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else command


def _environment(service):
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["NAME=value", "NAME"] form
        return dict(item.partition("=")[::2] for item in env)
    return env


def _dockerfile_instruction(name):
    """The last NAME instruction of the Dockerfile (the one that counts), continuations joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    found = [
        line.split(None, 1)[1]
        for line in text.splitlines()
        if line.strip().upper().startswith(name + " ")
    ]
    return found[-1] if found else ""


def test_compose_defines_exactly_the_six_services(compose):
    assert set(compose["services"]) == {"postgres", "redis", "web", "worker", "beat", "mailpit"}


def test_web_migrates_then_serves_config_wsgi_with_gunicorn(compose):
    command = _command(compose["services"]["web"])
    assert "manage.py migrate" in command
    assert "gunicorn config.wsgi" in command
    assert command.index("manage.py migrate") < command.index("gunicorn")


@pytest.mark.parametrize(
    ("service", "subcommand"),
    [("worker", "worker"), ("beat", "beat")],
)
def test_worker_and_beat_run_celery_on_the_config_app(compose, service, subcommand):
    words = _command(compose["services"][service]).split()
    assert words[:4] == ["celery", "-A", "config", subcommand]


@pytest.mark.parametrize("service", ["postgres", "redis", "web"])
def test_stateful_and_web_services_have_healthchecks(compose, service):
    healthcheck = compose["services"][service].get("healthcheck") or {}
    assert healthcheck.get("test"), f"{service} has no healthcheck test"
    assert not healthcheck.get("disable")


def test_web_healthcheck_requests_the_admin_login_page(compose):
    test = compose["services"]["web"]["healthcheck"]["test"]
    joined = " ".join(test) if isinstance(test, list) else test
    assert "http://127.0.0.1:8000/admin/login/" in joined


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_services_wait_for_healthy_database_and_redis(compose, service):
    depends_on = compose["services"][service]["depends_on"]
    for dependency in ("postgres", "redis"):
        assert depends_on[dependency]["condition"] == "service_healthy"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_services_get_the_production_service_urls_and_secrets(compose, service):
    env = _environment(compose["services"][service])
    missing = [name for name in REQUIRED_APP_ENV if name not in env]
    assert not missing, f"{service} lacks {missing}"
    assert str(env.get("DEBUG")).lower() == "false"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_every_env_name_in_compose_is_read_by_settings(compose, service):
    unknown = set(_environment(compose["services"][service])) - _settings_env_names()
    assert not unknown, f"{service} sets names settings.py never reads: {sorted(unknown)}"


def test_every_env_name_read_by_settings_is_in_env_example():
    example = (ROOT / ".env.example").read_text()
    # A commented "# NAME=value" line documents an optional variable and counts.
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", example, flags=re.MULTILINE))
    missing = _settings_env_names() - documented
    assert not missing, f".env.example does not document {sorted(missing)}"


def test_dockerfile_default_command_serves_config_wsgi_with_gunicorn():
    command = _dockerfile_instruction("CMD") or _dockerfile_instruction("ENTRYPOINT")
    # Exec form (a JSON list) or shell form.
    words = json.loads(command) if command.lstrip().startswith("[") else command.split()
    assert words[0] == "gunicorn"
    assert "config.wsgi:application" in words


def test_dockerfile_runs_as_a_non_root_user():
    user = _dockerfile_instruction("USER")
    assert user
    assert user.split(":")[0] not in {"root", "0"}


def test_compose_file_is_valid_for_docker_compose():
    executable = shutil.which("docker-compose")
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is not installed; CI must install it (see .ci/run)")
        pytest.skip("docker-compose is not installed")
    # No SECRET_KEY or other override in the environment: the file must validate on its defaults.
    environment = {key: value for key, value in os.environ.items() if key != "SECRET_KEY"}
    result = subprocess.run(
        [executable, "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
