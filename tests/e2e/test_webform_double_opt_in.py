"""Double opt-in from a public web form, in a real browser (issue 5): a visitor signs up with the
marketing box ticked; the confirmation email lands in the development Mailbox, where a member
of staff opens it and finds the link; opening the link changes nothing until the visitor presses
the button; then staff see "Double opt-in" on the person's opt-in page, with the ledger row
that proves it (source, verification, and the message id of the email that carried the link).
"""

import re

import pytest
from playwright.sync_api import expect

from campaigns.gateway import Kind
from campaigns.models import DoubleOptInRequest, EmailMessage, MailboxMessage, WebForm
from consents.models import ConsentEvent
from crm.models import EmailOptIn, Person
from tests.e2e.conftest import shot
from tests.factories import StaffUserFactory

# live_server answers from another thread, so the data must be committed (transaction=True).
pytestmark = pytest.mark.django_db(transaction=True)

EMAIL = "giulia.fontana@example.org"
SUBJECT = "Please confirm you want our emails"
THANK_YOU = "Thanks for signing up to the Consenso newsletter!"


def _ledger(person):
    return list(ConsentEvent.objects.filter(person_id=person.pk, subject="email_opt_in")
                .order_by("seq"))


def test_webform_signup_double_opt_in_confirmed_and_visible_to_staff(
    request, mail_to_mailbox, live_server, page, login, screenshot, fresh_browser
):
    WebForm.objects.create(slug="newsletter", name="Newsletter", fields=["first_name"],
                           thank_you_text=THANK_YOU)

    # 1. A visitor signs up on the public form, marketing box ticked.
    signup = fresh_browser()
    response = signup.goto(live_server.url + "/forms/newsletter/")
    assert response.status == 200
    expect(signup.get_by_role("heading", name="Newsletter")).to_be_visible()
    signup.get_by_label("Email", exact=True).fill(EMAIL)
    signup.get_by_label("First name", exact=True).fill("Giulia")
    marketing = signup.get_by_role("checkbox", name=re.compile("Send me news and offers"))
    marketing.check()
    expect(marketing).to_be_checked()
    shot(request, signup, "01-visitor-form-filled")
    with signup.expect_navigation():
        signup.get_by_role("button", name="Send").click()
    expect(signup.locator("main")).to_contain_text(THANK_YOU)
    expect(signup.locator("main")).to_contain_text("check your inbox")
    shot(request, signup, "02-visitor-thank-you")

    person = Person.objects.get(email=EMAIL)
    assert (person.first_name, person.email_opt_in) == ("Giulia", EmailOptIn.SINGLE_OPT_IN_WEBFORM)
    doi_mail = EmailMessage.objects.get(person=person, kind=Kind.DOUBLE_OPT_IN)
    assert doi_mail.status == "sent", (doi_mail.status, doi_mail.reason)
    kept = MailboxMessage.objects.get(subject=SUBJECT)
    assert kept.to == EMAIL
    assert kept.message_id == doi_mail.message_id
    ledger_after_signup = _ledger(person)

    # 2. Staff open the Mailbox and the confirmation email in it.
    login(StaffUserFactory(username="sam.staff"))
    page.goto("/admin/")
    page.locator("#content-main").get_by_role("link", name="Mailbox", exact=True).click()
    expect(page).to_have_url(re.compile(r"/admin/campaigns/mailboxmessage/$"))
    row = page.locator("#result_list tbody tr").filter(has_text=SUBJECT)
    expect(row).to_have_count(1)
    expect(row).to_contain_text(EMAIL)
    screenshot("03-staff-mailbox-list")
    row.locator("th a, td a").first.click()
    expect(page).to_have_url(re.compile(rf"/admin/campaigns/mailboxmessage/{kept.pk}/change/$"))
    expect(page.locator("#content-main")).to_contain_text(SUBJECT)
    expect(page.locator("#content-main")).to_contain_text(doi_mail.message_id)
    link = page.locator("#content-main pre a", has_text="/confirm/")
    expect(link).to_have_count(1)
    href = link.get_attribute("href")
    assert re.fullmatch(re.escape(live_server.url) + r"/confirm/[\w-]+/", href), href
    screenshot("04-staff-mailbox-message")

    # Following the link from the Mailbox is a GET: it shows the page and changes nothing.
    link.click()
    expect(page).to_have_url(href)
    expect(page.get_by_role("button", name="Yes, send me emails")).to_be_visible()
    screenshot("05-staff-followed-link-get-only")

    # 3. The visitor opens the link from their mail client (a new browser) and confirms.
    confirm = fresh_browser()
    confirm.goto(href)
    expect(confirm.get_by_role("heading", name="Confirm your subscription")).to_be_visible()
    shot(request, confirm, "06-visitor-confirmation-page")
    # Two GETs so far (staff, fresh_browser): nothing moved.
    person.refresh_from_db()
    assert person.email_opt_in == EmailOptIn.SINGLE_OPT_IN_WEBFORM
    assert _ledger(person) == ledger_after_signup
    assert DoubleOptInRequest.objects.get(person=person).confirmed_at is None

    with confirm.expect_navigation() as posted:
        confirm.get_by_role("button", name="Yes, send me emails").click()
    assert posted.value.status == 200
    expect(confirm.get_by_role("heading", name="Thank you, you are confirmed")).to_be_visible()
    expect(confirm.locator("main")).to_contain_text("We recorded your confirmation.")
    shot(request, confirm, "07-visitor-confirmed")

    # 4. Staff see the new status and the ledger row that proves it.
    page.goto(f"/admin/crm/person/{person.pk}/email-opt-in/")
    content = page.locator("#content-main, #content").first
    expect(content).to_contain_text(re.compile(r"Current status:\s*Double opt-in"))
    expect(page.get_by_role("heading", name="History (consent ledger)")).to_be_visible()
    history = page.locator("tr.optin-event")
    # Columns: when, status, source, verified by, evidence.
    newest = history.first.locator("td")
    expect(newest.nth(2)).to_have_text("Double opt-in")
    expect(newest.nth(3)).to_have_text("Confirmed by a link in an email")
    expect(newest.nth(4)).to_contain_text(f"message_id: {doi_mail.message_id}")
    # The sign-up's own row stays below it.
    expect(history.filter(has_text="Submitted through a web form")).to_have_count(1)
    screenshot("08-staff-opt-in-page")

    person.refresh_from_db()
    assert person.email_opt_in == EmailOptIn.DOUBLE_OPT_IN == "double_opt_in"
    event = ConsentEvent.objects.get(person_id=person.pk, subject="email_opt_in",
                                     state="double_opt_in")
    assert (event.source, event.verified_by) == ("double_opt_in", "email_confirmation")
    assert event.evidence["message_id"] == doi_mail.message_id
    assert DoubleOptInRequest.objects.get(person=person).confirmed_at is not None
