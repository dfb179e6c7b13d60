"""Revealing a sensitive value on the staff person page, in a real browser: only with a reason,
only for the groups the field allows, logged once, and masked again after a short while."""

import importlib
import re

import pytest
from django.apps import apps
from playwright.sync_api import expect

from crm import services
from crm.models import FieldDefinition
from encryption.models import FieldAccessLog
from tests.factories import AdminUserFactory, StaffUserFactory

# live_server answers from another thread, so the data must be committed (transaction=True).
pytestmark = pytest.mark.django_db(transaction=True)

CARD_TYPED = "4111 1111 1111 1111"
CARD = "4111111111111111"
CARD_MASK = "•" * 12 + "1111"
NATIONAL_ID = "RSSMRA85T10A562S"
REASON = "Customer asked on the phone to confirm the card on file"


@pytest.fixture(autouse=True)
def _sensitive_field_registry(settings):
    """Put back the core field definitions the data migration made (the flush after an earlier
    transactional test removes them; `_migrated_state` only recreates the roles), by running
    the migration's own function: it makes `card_number` and `national_id` encrypted core
    fields that Admins, and only Admins, may reveal."""
    migration = importlib.import_module("crm.migrations.0004_register_sensitive_identifiers")
    migration.register(apps, None)
    assert FieldDefinition.objects.get(key="card_number").reveal_groups.filter(
        name="Admins").exists()
    # The hourly counter lives in Redis, which outlives the test database while user ids
    # restart with it: earlier runs would otherwise count against this run's users.
    settings.REVEAL_RATE_LIMIT_PER_HOUR = 10_000


def _person():
    return services.person_create(
        data={"kind": "contact", "first_name": "Ilaria", "last_name": "Bonvicini",
              "email": "ilaria.bonvicini@example.org", "card_number": CARD_TYPED,
              "national_id": NATIONAL_ID},
        actor=None, source=services.Source.STAFF,
    )


def _sensitive_row(page, field):
    return page.locator(f".sensitive-panel .sensitive[data-field={field}]")


def test_authorised_staff_reveals_card_number_with_reason_and_it_masks_again(
    page, login, screenshot, settings
):
    admin = AdminUserFactory(username="ada.admin")
    person = _person()
    # The page masks again after the number of seconds the reveal response names; one second
    # keeps the test short (the live server reads the same, overridden, settings).
    settings.REVEAL_REMASK_SECONDS = 1
    reveal_calls = []
    page.on("request", lambda r: "/reveal/" in r.url and reveal_calls.append(r.url))

    login(admin)
    page.goto(f"/admin/crm/contact/{person.pk}/change/")
    row = _sensitive_row(page, "card_number")
    value = row.locator(".sensitive-value")
    reason = row.get_by_role("textbox", name=re.compile(r"^Reason for revealing"))
    button = row.get_by_role("button", name="Reveal")
    expect(page.get_by_role("heading", name="Sensitive values")).to_be_visible()
    expect(page.locator(".sensitive-panel")).to_contain_text("Every reveal is logged")
    expect(value).to_have_text(CARD_MASK)
    # The plaintext is nowhere in the page, not only not in the panel.
    assert CARD not in page.content()
    screenshot("01-masked")

    # No reason: the page asks for one and sends nothing.
    button.click()
    expect(reason).to_have_attribute("aria-invalid", "true")
    expect(reason).to_be_focused()
    expect(value).to_have_text(CARD_MASK)
    assert reveal_calls == []
    assert not FieldAccessLog.objects.exists()

    reason.fill(REASON)
    # A double click (a common habit on buttons) still reveals, and logs, once.
    with page.expect_response(re.compile(r"/reveal/card_number/$")) as answer:
        button.dblclick()
    expect(value).to_have_text(CARD)
    screenshot("02-revealed")
    response = answer.value
    assert response.status == 200
    assert "no-store" in response.headers["cache-control"]
    assert response.json()["remask_after_seconds"] == 1

    entry = FieldAccessLog.objects.get()
    assert (entry.user, entry.username, entry.subject_id, entry.field, entry.reason) == (
        admin, "ada.admin", person.pk, "card_number", REASON)
    assert entry.role == "Admins"

    expect(value).to_have_text(CARD_MASK, timeout=5_000)
    expect(value).not_to_have_class(re.compile(r"\brevealed\b"))
    expect(button).to_be_enabled()
    screenshot("03-masked-again")
    # Masking again is the page's business: it neither asks the server nor logs again.
    assert len(reveal_calls) == 1
    assert FieldAccessLog.objects.count() == 1


def test_staff_without_reveal_right_sees_no_reveal_button(page, login, screenshot):
    staff = StaffUserFactory(username="sam.staff")
    person = _person()

    login(staff)
    page.goto(f"/admin/crm/contact/{person.pk}/change/")
    row = _sensitive_row(page, "card_number")
    expect(row.locator(".sensitive-value")).to_have_text(CARD_MASK)
    expect(_sensitive_row(page, "national_id").locator(".sensitive-value")).to_have_text(
        "•" * 12 + "562S")
    panel = page.locator(".sensitive-panel")
    expect(panel.get_by_role("button", name="Reveal")).to_have_count(0)
    expect(panel.locator(".reveal-reason")).to_have_count(0)
    expect(panel).not_to_contain_text("Every reveal is logged")
    screenshot("01-masked-no-reveal")

    # Going around the page does not help: the server refuses, logs nothing, shows nothing.
    token = page.locator("[name=csrfmiddlewaretoken]").first.input_value()
    for field in ("card_number", "national_id"):
        response = page.request.post(
            f"/admin/crm/contact/{person.pk}/reveal/{field}/",
            form={"reason": "just curious"}, headers={"X-CSRFToken": token},
        )
        body = response.text()
        assert response.status == 403, body
        # The service's refusal, not a CSRF failure (which is a 403 too, but an HTML page).
        assert response.json() == {"detail": "You may not reveal this field."}
        assert CARD not in body and NATIONAL_ID not in body
    assert not FieldAccessLog.objects.exists()
