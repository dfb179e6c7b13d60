"""Set-up shared by the preference-page tests: a person on two lists, purposes, a policy."""

import re

import pytest

from consents import services as consent_services
from consents.models import PortalSettings, PurposeKind
from consents.selectors import portal_settings
from crm import services as crm_services
from crm.tokens import make_token
from tests.factories import MarketingListFactory, PersonFactory

LINK = re.compile(r"https?://[^\s\"'<>]+")


def set_portal(**changes):
    """Change the page's settings through the consents service (when it has landed)."""
    update = getattr(consent_services, "portal_settings_update", None)
    if update is not None:
        return update(**changes)
    portal_settings()
    PortalSettings.objects.filter(pk=1).update(**changes)
    return portal_settings()


@pytest.fixture
def portal(db, settings):
    settings.SITE_URL = "http://testserver"
    set_portal(enabled=True)
    consent_services.policy_publish(title="How Consenso uses your data",
                                    text="We use your data to send you what you asked for.")
    tracking = consent_services.purpose_create(
        key="tracking", name="Engagement tracking", kind=PurposeKind.ENGAGEMENT_TRACKING,
        title="Measure opens and clicks", text="We count which emails you open.")
    partners = consent_services.purpose_create(
        key="partners", name="Partner offers", kind=PurposeKind.CUSTOM,
        title="Offers from partners", text="We may tell you about partner offers.",
        visibility_rule={"field": "region", "op": "eq", "value": "EU"}, default_selected=True)
    return {"tracking": tracking, "partners": partners}


@pytest.fixture
def person(portal):
    person = PersonFactory(email="giulia@example.org", first_name="Giulia",
                           email_opt_in="single_opt_in_user")
    for name in ("Newsletter", "Events"):
        crm_services.marketing_list_add(marketing_list=MarketingListFactory(name=name),
                                        person_ids=[person.pk], source="staff")
    return person


@pytest.fixture
def page_url(person):
    return f"/p/{make_token(person, purpose='portal')}/"


def confirm_links(outbox):
    """The confirmation links in the mails sent so far."""
    return [link for message in outbox for link in LINK.findall(message.body)
            if "/confirm-change/" in link]
