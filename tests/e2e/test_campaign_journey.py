"""A campaign in a real browser (issue 7): staff build it for a list of a few people (some opted
out, one stopped), see the dry run by the gateway's reasons and the people behind a count, send
it and see its progress and stats; a recipient opens the email (the open is counted: they allow
tracking), follows "Manage your email preferences or unsubscribe" and lands on their preference
page.
"""

import re

import pytest
from playwright.sync_api import expect

from campaigns.models import Campaign, MailboxMessage
from campaigns.models import CampaignStatus as C
from campaigns.optin import Actor, opt_in_change
from consents import services as consent_services
from consents.models import PurposeKind, Verification
from crm import rights
from crm import services as crm_services
from tests.e2e.conftest import shot
from tests.factories import MarketingListFactory, PersonFactory, StaffUserFactory

# live_server answers from another thread, so the data must be committed (transaction=True).
pytestmark = pytest.mark.django_db(transaction=True)

SUBJECT = "Spring in Milan, {{ first_name }}"
BODY_HTML = ("<h2>Hello {{ first_name }},</h2><p>Our spring events start on 3 April. "
             "<a href=\"https://events.example/spring\">See the programme</a>.</p>")
BODY_TEXT = "Hello {{ first_name }},\n\nOur spring events start on 3 April."


def _confirmed(first_name, email):
    person = PersonFactory(first_name=first_name, last_name="Rossi", email=email)
    return opt_in_change(person=person, actor=Actor.DOUBLE_OPT_IN,
                         verified_by=Verification.EMAIL_CONFIRMATION)


@pytest.fixture
def newsletter(mail_to_mailbox):
    """Five people on "Spring newsletter": two may receive it (Giulia allows tracking), one
    opted out herself, one asked staff to stop emailing, one asked us to stop processing."""
    consent_services.portal_settings_update(enabled=True)
    tracking = consent_services.purpose_create(
        key="tracking", name="Engagement tracking", kind=PurposeKind.ENGAGEMENT_TRACKING,
        title="Measure opens and clicks", text="We count which of our emails you open.")
    giulia = _confirmed("Giulia", "giulia@example.org")
    consent_services.consent_grant(person=giulia, purpose=tracking, source="webform",
                                   verified_by=Verification.WEB_FORM)
    marco = _confirmed("Marco", "marco@example.org")
    sara = _confirmed("Sara", "sara@example.org")
    opt_in_change(person=sara, actor=Actor.CONTACT, verified_by=Verification.EMAIL_CONFIRMATION)
    luca = _confirmed("Luca", "luca@example.org")
    staff = StaffUserFactory(username="sam.staff")
    opt_in_change(person=luca, actor=Actor.STAFF, wanted="opt_out_user", user=staff,
                  note="Asked by phone", verified_by=Verification.STAFF_USER)
    piero = _confirmed("Piero", "piero@example.org")
    the_list = MarketingListFactory(name="Spring newsletter")
    crm_services.marketing_list_add(marketing_list=the_list, source="staff",
                                    person_ids=[p.pk for p in (giulia, marco, sara, luca, piero)])
    rights.processing_stop(person=piero, source="portal")
    return {"staff": staff, "giulia": giulia, "sara": sara}


def _reason_row(page, reason):
    return page.locator(f".dry-run tr.reason-{reason}")


def test_staff_send_a_campaign_after_its_dry_run_and_a_recipient_reaches_their_page(
    request, newsletter, live_server, page, login, screenshot, fresh_browser
):
    login(newsletter["staff"])
    page.goto("/admin/campaigns/campaign/add/")
    page.get_by_label("Name").fill("Spring events")
    page.get_by_label("Subject").fill(SUBJECT)
    page.get_by_label("HTML body").fill(BODY_HTML)
    page.get_by_label("Text body").fill(BODY_TEXT)
    # filter_horizontal: choose the list on the left, move it right.
    page.locator("#id_lists_from").select_option(label="Spring newsletter")
    page.locator("#id_lists_add").click()
    screenshot("01-new-campaign")
    with page.expect_navigation():
        page.get_by_role("button", name="Save and continue editing").click()
    campaign = Campaign.objects.get(name="Spring events")
    expect(page).to_have_url(re.compile(rf"/admin/campaigns/campaign/{campaign.pk}/change/"))

    # The dry run, by reason, in words and codes.
    expect(_reason_row(page, "eligible").locator("td.count")).to_have_text("2")
    expect(_reason_row(page, "opted_out_contact")).to_contain_text("They opted out themselves")
    expect(_reason_row(page, "opted_out_contact").locator("td.count")).to_have_text("1")
    expect(_reason_row(page, "opted_out_user").locator("td.count")).to_have_text("1")
    expect(_reason_row(page, "processing_stopped").locator("td.count")).to_have_text("1")
    expect(page.locator(".dry-run .dry-run-total")).to_have_text("5")
    # The preview: the first person who can receive it, with their name merged in.
    expect(page.locator(".preview-subject")).to_have_text(re.compile(r"Spring in Milan, "
                                                                     r"(Giulia|Marco)"))
    preview = page.frame_locator("iframe.preview-html")
    expect(preview.get_by_role("heading", name=re.compile(r"Hello (Giulia|Marco),"))
           ).to_be_visible()
    expect(preview.get_by_role("link", name="Manage your email preferences or unsubscribe")
           ).to_be_visible()
    page.locator("#preview").scroll_into_view_if_needed()
    screenshot("02-dry-run-and-preview")

    # The people behind a count.
    link = _reason_row(page, "opted_out_contact").get_by_role("link", name="1")
    # Scrolled down to the preview (a frame paints only once in view): scroll back first;
    # clicking the link straight from down there did not navigate in headless chromium.
    link.scroll_into_view_if_needed()
    link.click()
    expect(page).to_have_url(re.compile(rf"campaign_audience={campaign.pk}%3Aopted_out_contact"))
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    expect(page.locator("#result_list")).to_contain_text("sara@example.org")
    screenshot("03-people-behind-a-count")
    page.go_back()

    with page.expect_navigation():
        page.get_by_role("button", name="Send now").click()
    expect(page.locator(".messagelist")).to_contain_text("Sending")
    # Tasks run inline here: by the time the page is back, the two messages went.
    page.reload()
    expect(page.locator(".campaign-actions .status")).to_have_text("Sent")
    expect(page.locator(".progress-value")).to_have_text("100.0%")
    expect(page.locator(".stat-sent")).to_have_text("2")
    expect(page.locator(".stat-tracking")).to_contain_text("1 with the open pixel")  # Giulia
    expect(page.locator(".excluded-by-reason")).to_contain_text("processing_stopped")
    expect(page.locator("input[name=subject]")).to_have_count(0)  # read-only now
    screenshot("04-sent-progress-and-stats")
    assert Campaign.objects.get(pk=campaign.pk).status == C.SENT
    assert sorted(MailboxMessage.objects.values_list("to", flat=True)) == [
        "giulia@example.org", "marco@example.org"]

    # Giulia opens the email in her mail client (its pixel loads: she allows tracking) …
    received = MailboxMessage.objects.get(to="giulia@example.org")
    assert received.subject == "Spring in Milan, Giulia"
    inbox = fresh_browser()
    with inbox.expect_response(re.compile(r"/t/o/")) as pixel:
        inbox.set_content(received.body_html)
    assert pixel.value.status == 200
    expect(inbox.get_by_role("heading", name="Hello Giulia,")).to_be_visible()
    shot(request, inbox, "05-recipient-opens-the-email")
    # … and follows the unsubscribe link to her preference page.
    with inbox.expect_navigation():
        inbox.get_by_role("link", name="Manage your email preferences or unsubscribe").click()
    expect(inbox).to_have_url(re.compile(re.escape(live_server.url) + r"/p/[^/]+/$"))
    expect(inbox.get_by_role("heading", name="Your privacy choices", level=1)).to_be_visible()
    shot(request, inbox, "06-preference-page")

    # Staff see the open in the stats.
    page.reload()
    expect(page.locator(".stat-opens")).to_contain_text("1 person (1 in all)")
    screenshot("05-stats-with-the-open")
