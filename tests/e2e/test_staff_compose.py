"""Staff email from the person page, in a real browser (issue 5, item 6): staff pick a template,
edit and send; the message lands in the development Mailbox with the admins' footer and the
person's own page link. For a contact who opted out, the page says an ad-hoc email may not go
and why, and refuses it; once their own message is recorded, a reply to it goes.
"""

import re

import pytest
from playwright.sync_api import expect

from campaigns.models import EmailMessage, InboundMessage, MailboxMessage
from campaigns.optin import Actor, opt_in_change
from consents.models import Verification
from consents.selectors import portal_settings
from tests.factories import PersonFactory, StaffUserFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def footer():
    row = portal_settings()  # no consents service writes these settings yet
    row.email_footer = "Acme Ltd · Your email choices: {link}"
    row.save()
    return row.email_footer


def test_staff_compose_from_a_template_lands_in_the_mailbox_with_the_footer(
    mail_to_mailbox, footer, live_server, page, login, screenshot
):
    person = PersonFactory(first_name="Giulia", email="giulia@example.org")
    login(StaffUserFactory(username="sam.staff"))
    page.goto(f"/admin/crm/person/{person.pk}/change/")
    page.locator(".object-tools").get_by_role("link", name="Send email…").click()
    expect(page.get_by_role("heading", name="Send an email")).to_be_visible()
    expect(page.locator("tr.decision-adhoc")).to_contain_text("yes")

    page.get_by_label("Start from").select_option(label="Follow-up")
    with page.expect_navigation():
        page.get_by_role("button", name="Use this template").click()
    expect(page).to_have_url(re.compile(r"\?template=follow_up"))
    expect(page.get_by_label("Subject")).to_have_value("Following up on our conversation")
    body = page.get_by_label("Message")
    expect(body).to_have_value(re.compile(r"^Hello Giulia,"))
    body.fill(body.input_value().replace("Do let me know", "The offer is attached. Let me know"))
    screenshot("01-compose-filled")
    with page.expect_navigation():
        page.get_by_role("button", name="Send").click()
    expect(page).to_have_url(re.compile(rf"/admin/crm/person/{person.pk}/change/$"))
    expect(page.locator(".messagelist")).to_contain_text("Email queued")
    conversation = page.locator(".conversation-block")
    expect(conversation.locator("tr.conversation-out")).to_contain_text("sent")
    screenshot("02-person-page-conversation")

    row = EmailMessage.objects.get(person=person)
    assert (row.kind, row.status) == ("adhoc", "sent")
    kept = MailboxMessage.objects.get(message_id=row.message_id)
    assert kept.to == "giulia@example.org"
    assert "The offer is attached." in kept.body_text
    assert re.search(re.escape(live_server.url) + r"/p/[0-9a-f]+-[0-9a-f]+/", kept.body_text)
    assert "Acme Ltd · Your email choices:" in kept.body_html

    # Staff open it from the Mailbox: the footer's link is there and clickable.
    page.goto(f"/admin/campaigns/mailboxmessage/{kept.pk}/change/")
    expect(page.locator("#content-main pre a", has_text="/p/")).to_have_count(1)
    screenshot("03-mailbox-message")


def test_opted_out_contact_refused_ad_hoc_but_gets_a_reply_to_their_message(
    mail_to_mailbox, footer, page, login, screenshot
):
    person = PersonFactory(first_name="Ola", email="ola@example.org")
    opt_in_change(person=person, actor=Actor.CONTACT, verified_by=Verification.NONE)
    login(StaffUserFactory(username="sam.staff"))
    page.goto(f"/admin/crm/person/{person.pk}/send-email/")
    expect(page.locator("tr.decision-adhoc")).to_contain_text("they opted out themselves")
    page.get_by_label("Subject").fill("Spring offer")
    page.get_by_label("Message").fill("Buy now.")
    with page.expect_navigation():
        page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("alert")).to_contain_text("Not sent: they opted out themselves")
    screenshot("01-refused")
    assert not EmailMessage.objects.filter(person=person).exists()

    page.goto(f"/admin/crm/person/{person.pk}/change/")
    page.locator(".object-tools").get_by_role("link", name="Record a received email…").click()
    page.get_by_label("Subject").fill("Invoice question")
    page.locator("#id_body").fill("Why was I charged twice?")
    with page.expect_navigation():
        page.get_by_role("button", name="Record").click()
    inbound = InboundMessage.objects.get(person=person)
    received = page.locator(".conversation-block tr.conversation-in")
    expect(received).to_contain_text("Invoice question")
    with page.expect_navigation():
        received.get_by_role("link", name="Reply…").click()
    expect(page.get_by_label("Subject")).to_have_value("Re: Invoice question")
    expect(page.get_by_label("In reply to")).to_have_value(inbound.message_id)
    page.get_by_label("Message").fill("Sorry: the second charge is refunded.")
    screenshot("02-reply")
    with page.expect_navigation():
        page.get_by_role("button", name="Send").click()
    expect(page.locator(".conversation-block tr.conversation-out")).to_contain_text("our reply")
    row = EmailMessage.objects.get(person=person)
    assert (row.kind, row.status, row.in_reply_to) == ("reply", "sent", inbound.message_id)
    kept = MailboxMessage.objects.get(message_id=row.message_id)
    assert kept.headers.get("In-Reply-To") == inbound.message_id
    assert "the second charge is refunded" in kept.body_text
