import base64

import pytest

from config import celery_app


@pytest.fixture(autouse=True, scope="session")
def _tasks_inline_by_default():
    """Tests run tasks inline unless they start a real worker (see tests/config/test_celery.py)."""
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = previous


@pytest.fixture(autouse=True, scope="session")
def _private_cache_namespace():
    """Each test session gets its own cache key prefix: parallel runs sharing one Redis (the
    broker's database too) never see each other's counters, and nothing needs FLUSHDB."""
    import os
    import time

    from django.conf import settings
    from django.test import override_settings

    caches = {alias: {**conf, "KEY_PREFIX": f"test-{os.getpid()}-{time.time_ns()}"}
              for alias, conf in settings.CACHES.items()}
    with override_settings(CACHES=caches):
        yield


@pytest.fixture(autouse=True, scope="session")
def _fast_password_hashing():
    """PBKDF2's deliberate slowness costs ~0.3 s per test user; tests do not need it."""
    from django.conf import settings

    previous = settings.PASSWORD_HASHERS
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    yield
    settings.PASSWORD_HASHERS = previous


# Fixed test keys (never used outside tests): two master keys so rotation can be exercised.
TEST_KEYS = [
    "t1:" + base64.b64encode(b"1" * 32).decode(),
    "t0:" + base64.b64encode(b"0" * 32).decode(),
]
TEST_BLIND_INDEX_KEY = base64.b64encode(b"b" * 32).decode()


@pytest.fixture(autouse=True, scope="session")
def _encryption_keys():
    from django.conf import settings

    previous = settings.FIELD_ENCRYPTION_KEYS, settings.BLIND_INDEX_KEY
    settings.FIELD_ENCRYPTION_KEYS = TEST_KEYS
    settings.BLIND_INDEX_KEY = TEST_BLIND_INDEX_KEY
    yield
    settings.FIELD_ENCRYPTION_KEYS, settings.BLIND_INDEX_KEY = previous


@pytest.fixture
def staff_user(db):
    from tests.factories import StaffUserFactory

    return StaffUserFactory(username="sam.staff")


@pytest.fixture
def admin_user_(db):
    from tests.factories import AdminUserFactory

    return AdminUserFactory(username="ada.admin")


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def admin_client_(client, admin_user_):
    client.force_login(admin_user_)
    return client


def _api(user):
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    api = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return api


@pytest.fixture
def staff_api(staff_user):
    return _api(staff_user)


@pytest.fixture
def admin_api(admin_user_):
    return _api(admin_user_)


@pytest.fixture(autouse=True, scope="session")
def _close_the_senders_own_connections(django_db_setup):
    """The sender share-locks a batch's people on a second connection of its own, and marks
    messages sent on a third: close them before the test database is dropped (an open session
    would keep it from being dropped)."""
    yield
    from campaigns import handoff, sender

    sender.close_lock_connections()
    handoff.close_mark_connections()


@pytest.fixture(autouse=True)
def _no_smtp_session_across_tests():
    """The sender keeps its SMTP session for the next batch: not for the next test."""
    yield
    from campaigns import sender

    sender.close_mail_connection()
