"""Consents in a real browser (issue 4): an admin adds a custom purpose with a visibility rule;
a member of staff records a person's paper answer for it on the contact page and finds that
person by it in the Contacts list; the answer is in the ledger, and the chain still verifies."""

import json
import re

import pytest
from playwright.sync_api import expect

from consents import ledger
from consents.models import ConsentEvent, ConsentPurpose
from tests.e2e.conftest import (
    FACTORY_PASSWORD,
    TIMEOUT_MS,
    VIEWPORT,
    shot,
)
from tests.factories import AdminUserFactory, PersonFactory, StaffUserFactory

# live_server answers from another thread, so the data must be committed (transaction=True).
pytestmark = pytest.mark.django_db(transaction=True)

RULE = {"field": "stage", "op": "eq", "value": "ready_to_buy"}
NOTE = "Signed the partner-sharing paper form at the Verona trade fair, 2026-03-12"


@pytest.fixture
def admin_page(request, browser, live_server):
    """A second browser context (its own cookies) for the admin, beside the staff's `page`."""
    context = browser.new_context(base_url=live_server.url, viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    admin_page = context.new_page()
    yield admin_page
    context.close()


def _log_in(page, user):
    page.goto("/admin/login/")
    page.fill("#id_username", user.get_username())
    page.fill("#id_password", FACTORY_PASSWORD)
    with page.expect_navigation():
        page.click("#login-form [type=submit]")
    expect(page).not_to_have_url(re.compile(r"/admin/login/"))


def _admin_adds_partner_sharing_purpose(request, page):
    _log_in(page, AdminUserFactory(username="ada.admin"))
    page.goto("/admin/")
    page.locator("#content-main").get_by_role("link", name="Consent purposes", exact=True).click()
    expect(page).to_have_url(re.compile(r"/admin/consents/consentpurpose/$"))
    page.locator(".object-tools").get_by_role("link", name="Add consent purpose").click()
    expect(page).to_have_url(re.compile(r"/admin/consents/consentpurpose/add/$"))

    page.fill("#id_key", "partner_sharing")
    page.fill("#id_name", "Sharing with partners")
    page.select_option("#id_kind", "custom")
    # Typed, not pasted: the textarea is what an admin edits the rule in. It is cleared first
    # because a JSON widget may show an empty rule as `null`.
    rule_box = page.locator("#id_visibility_rule")
    rule_box.fill("")
    rule_box.press_sequentially(json.dumps(RULE))
    page.fill("#id_title", "Sharing your details with our partners")
    page.fill("#id_text", "We may pass your name and email to selected partners so they can "
                          "offer you their services. You can withdraw at any time.")
    shot(request, page, "01-admin-add-purpose")
    page.click("input[name=_save]")

    expect(page.locator(".messagelist .success")).to_contain_text("was added successfully")
    row = page.locator("#result_list tbody tr").filter(has_text="Sharing with partners")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("partner_sharing")
    expect(row).to_contain_text("stage is 'ready_to_buy'")
    shot(request, page, "02-admin-purpose-list")

    purpose = ConsentPurpose.objects.get(key="partner_sharing")
    assert (purpose.kind, purpose.visibility_rule) == ("custom", RULE)
    assert list(purpose.versions.values_list("version", flat=True)) == [1]


def test_admin_creates_purpose_and_staff_records_and_filters_by_it(
    request, page, admin_page, login, screenshot
):
    _admin_adds_partner_sharing_purpose(request, admin_page)

    staff = StaffUserFactory(username="sam.staff")
    target = PersonFactory(kind="contact", first_name="Ottavia", last_name="Zanzottera",
                           email="ottavia.zanzottera@example.org", stage="ready_to_buy")
    # Same stage, never asked: the consent filter must leave this one out.
    other = PersonFactory(kind="contact", first_name="Bruno", last_name="Zanzottera",
                          email="bruno.zanzottera@example.org", stage="ready_to_buy")

    login(staff)
    # Settings stay with the Admins.
    for url in ("/admin/consents/consentpurpose/", "/admin/consents/consentpurpose/add/"):
        assert page.goto(url).status == 403, url

    page.goto(f"/admin/crm/contact/{target.pk}/change/")
    block = page.locator(".consents-block")
    expect(block.get_by_role("heading", name=re.compile("^Consents"))).to_be_visible()
    expect(block).to_contain_text("No consent asked or recorded yet")
    screenshot("03-staff-consents-block-empty")

    block.get_by_role("link", name="Record an answer…").click()
    expect(page).to_have_url(re.compile(rf"/admin/crm/contact/{target.pk}/record-consent/$"))
    page.select_option("#id_purpose", label="Sharing with partners")
    page.select_option("#id_answer", label="Granted")
    page.fill("#id_note", NOTE)
    screenshot("04-staff-record-form")
    page.get_by_role("button", name="Record").click()

    expect(page).to_have_url(re.compile(rf"/admin/crm/contact/{target.pk}/change/$"))
    expect(page.locator(".messagelist")).to_contain_text("Answer recorded in the consent ledger.")
    rows = page.locator(".consents-block tr.consent-row")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_class(re.compile(r"\bstate-granted\b"))
    expect(rows.first).to_contain_text("Sharing with partners")
    expect(rows.first).to_contain_text("Granted")
    expect(rows.first).to_contain_text("v1")
    expect(rows.first).to_contain_text("Staff / Recorded by a staff member")
    expect(page.locator(".consents-block")).not_to_contain_text("No consent asked")
    screenshot("05-staff-consents-block-granted")

    page.goto("/admin/crm/contact/")
    expect(page.locator("#result_list tbody tr")).to_have_count(2)
    page.locator("#changelist-filter").get_by_role(
        "link", name="Sharing with partners: granted", exact=True).click()
    expect(page).to_have_url(re.compile(r"[?&]consent=partner_sharing(:|%3A)granted"))
    listed = page.locator("#result_list tbody tr")
    expect(listed).to_have_count(1)
    expect(listed.first).to_contain_text(target.email)
    expect(page.locator("#result_list")).not_to_contain_text(other.email)
    screenshot("06-staff-contacts-filtered")

    event = ConsentEvent.objects.get(person_id=target.pk)
    assert (event.subject, event.action, event.state) == ("partner_sharing", "grant", "granted")
    assert (event.source, event.verified_by) == ("staff", "staff_user")
    assert event.evidence == {"note": NOTE, "user_id": staff.pk}
    assert event.purpose_version.version == 1
    assert not ConsentEvent.objects.filter(person_id=other.pk).exists()
    assert ledger.verify_all() == []
