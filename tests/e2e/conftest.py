"""Browser tests: Debian's chromium driven by Playwright's sync API against pytest-django's
`live_server`.

Playwright cannot download a browser here, so it always launches /usr/bin/chromium. Where that
browser is missing the tests skip on a developer machine and fail under CI, so a CI image that
lost its browser cannot turn the suite green by skipping them.

Every test leaves a final screenshot in `artifacts/e2e/<test name>.png` (gitignored) and can save
more at key steps with the `screenshot` fixture.
"""

import os
import re
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
VIEWPORT = {"width": 1366, "height": 900}
# Long enough for a cold live server on a busy CI runner, short enough to fail fast.
TIMEOUT_MS = 15_000
# The password tests.factories.UserFactory gives every user.
FACTORY_PASSWORD = "correct horse battery staple"

E2E_DIR = Path(__file__).resolve().parent
ARTIFACTS = E2E_DIR.parents[1] / "artifacts" / "e2e"


def pytest_collection_modifyitems(config, items):
    # This hook sees the whole session's items: mark only the ones under tests/e2e/.
    for item in items:
        if E2E_DIR in Path(item.path).parents:
            item.add_marker(pytest.mark.e2e)


def _artifact_name(node_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", node_name).strip("_")


@pytest.fixture(scope="package")
def browser(request):
    """One chromium for all browser tests.

    Package scope rather than session scope: while Playwright's sync API is started, an asyncio
    loop counts as running in this thread, which would change the rules (async_to_sync,
    asyncio.run, Django's async-safety check) for every unrelated test that runs afterwards.
    """
    if not Path(CHROMIUM).exists():
        reason = f"{CHROMIUM} is missing (apt-get install chromium); the e2e tests need it."
        if os.environ.get("CI"):
            pytest.fail(f"{reason} CI must run the browser tests, never skip them.")
        pytest.skip(reason)
    # Create the test database before the loop starts, on the thread's own connection.
    request.getfixturevalue("django_db_setup")
    from django.db import connections
    from playwright.sync_api import sync_playwright

    thread_connections = {alias: connections[alias] for alias in connections}
    with pytest.MonkeyPatch.context() as env, sync_playwright() as playwright:
        # Django refuses ORM calls from a thread with a running loop; the tests and the
        # fixtures around them (factories, the flush) are plain synchronous code here.
        env.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        # With a loop running, Django looks connections up per asyncio context instead of per
        # thread and would open a second connection that nothing closes: the test database
        # then cannot be dropped, and pytest-django's per-connection state (serialized
        # rollback data) is not found. Give the loop's context the thread's connections.
        for alias, connection in thread_connections.items():
            connections[alias] = connection
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(autouse=True)
def _migrated_state(transactional_db):
    """Recreate what `migrate` leaves behind (content types, permissions, the two roles).

    live_server needs committed data, so these tests are transactional, and the flush after a
    transactional test empties every table; whether the post_migrate handlers ran again after
    it depends on which test came before. Running them here (all idempotent) makes a browser
    test independent of the order of the session.
    """
    from django.core.management.sql import emit_post_migrate_signal
    from django.db import connections

    for alias in connections:
        emit_post_migrate_signal(verbosity=0, interactive=False, db=alias)


@pytest.fixture
def page(request, browser, live_server):
    """A fresh browser context per test (no cookies shared), pointed at the live server."""
    context = browser.new_context(base_url=live_server.url, viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    yield page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        page.screenshot(path=ARTIFACTS / f"{_artifact_name(request.node.name)}.png",
                        full_page=True)
    finally:
        context.close()


@pytest.fixture
def screenshot(request, page):
    """`screenshot("after-save")` saves `artifacts/e2e/<test name>--after-save.png`."""
    return lambda step: shot(request, page, step)


def shot(request, page, step: str) -> Path:
    """Save `page` (any browser context's) as `artifacts/e2e/<test name>--<step>.png`."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{_artifact_name(request.node.name)}--{_artifact_name(step)}.png"
    page.screenshot(path=path, full_page=True)
    return path


@pytest.fixture
def mail_to_mailbox(settings, live_server):
    """Mail lands in the Mailbox the staff UI lists, and its links point at the live server."""
    settings.EMAIL_BACKEND = "campaigns.mailbox.MailboxBackend"
    # Derived from EMAIL_BACKEND when settings load (an EMAIL_URL in the environment turns it
    # off): the Mailbox page is only listed while it is on.
    settings.MAILBOX_ENABLED = True
    settings.SITE_URL = live_server.url


@pytest.fixture
def fresh_browser(browser, live_server):
    """`fresh_browser(viewport=…, locale=…)` opens a page in a new browser context: its own
    cookies (a contact, a visitor, a second staff member), closed after the test."""
    contexts = []

    def open_page(viewport=VIEWPORT, locale="en-GB"):
        context = browser.new_context(base_url=live_server.url, viewport=viewport,
                                      locale=locale)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def login(page):
    """Log a user in through the real admin login form: `login(user)` (factory password)."""
    from playwright.sync_api import expect

    def log_in(user, password: str = FACTORY_PASSWORD):
        page.goto("/admin/login/")
        page.fill("#id_username", user.get_username())
        page.fill("#id_password", password)
        with page.expect_navigation():
            page.click("#login-form [type=submit]")
        # A refused login re-renders the form with an error note: say so now, not at timeout.
        refused = page.locator(".errornote")
        if refused.count():
            pytest.fail(f"Login as {user.get_username()!r} refused: {refused.inner_text()}")
        expect(page).not_to_have_url(re.compile(r"/admin/login/"))
        return page

    return log_in
