"""Preference-page settings: the service, the "portal" section of /api/settings/, the admins'
settings page and the invitation runs' list."""

import pytest
from django.core.exceptions import ValidationError

from consents import services as consent_services
from consents.selectors import portal_settings
from preferences_portal.models import InvitationRun
from tests.factories import PersonFactory

pytestmark = pytest.mark.django_db

EU = {"field": "region", "op": "eq", "value": "EU"}


def test_service_stores_rules_and_an_empty_rule_as_everyone():
    consent_services.portal_settings_update(access_rule=EU, notification_rule=None,
                                            email_footer="Your page: {link}")
    row = portal_settings()
    assert row.access_rule == EU and row.notification_rule == {}
    assert row.email_footer == "Your page: {link}"


@pytest.mark.parametrize("changes, field", [
    ({"access_rule": {"field": "shoe_size", "op": "eq", "value": 1}}, "access_rule"),
    ({"notification_rule": {"any": []}}, "notification_rule"),
    ({"notification_rule": ["region"]}, "notification_rule"),
    ({"confirmation_hours": 0}, "confirmation_hours"),
    ({"unconfirmed_lead_retention_months": 0}, "unconfirmed_lead_retention_months"),
    ({"colour": "blue"}, "colour"),
])
def test_service_refuses_bad_values_with_field_errors_and_saves_nothing(changes, field):
    with pytest.raises(ValidationError) as refused:
        consent_services.portal_settings_update(enabled=True, **changes)
    assert field in refused.value.message_dict
    assert portal_settings().enabled is False
    assert not InvitationRun.objects.exists()


def test_enabling_starts_one_run_and_saving_again_starts_none(
        django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        consent_services.portal_settings_update(enabled=True)
        consent_services.portal_settings_update(enabled=True, email_footer="x")
        consent_services.portal_settings_update(access_rule=EU)
    assert list(InvitationRun.objects.values_list("reason", flat=True)) == ["enabled"]
    with django_capture_on_commit_callbacks(execute=False):
        consent_services.portal_settings_update(enabled=False)
        consent_services.portal_settings_update(enabled=True)
    assert InvitationRun.objects.count() == 2


# -- API ------------------------------------------------------------------------------------------

def test_api_reads_the_portal_section(admin_api):
    body = admin_api.get("/api/settings/").json()
    assert body["portal"] == {"enabled": False, "access_rule": {}, "notification_rule": {},
                              "email_footer": "", "confirmation_hours": 48,
                              "unconfirmed_lead_retention_months": None}


def test_api_patch_changes_the_portal_settings_and_enabling_invites(
        admin_api, django_capture_on_commit_callbacks, mailoutbox):
    PersonFactory(region="EU")
    PersonFactory(region="NA")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_api.patch("/api/settings/", {"portal": {
            "enabled": True, "access_rule": EU, "notification_rule": {"opt_in": ["none"]},
            "email_footer": "Manage: {link}"}}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["portal"]["access_rule"] == EU
    run = InvitationRun.objects.get()
    assert (run.reason, run.state, run.total, run.sent) == ("enabled", "done", 1, 1)
    assert len(mailoutbox) == 1


@pytest.mark.parametrize("portal, field", [
    ({"enabled": "yes"}, "enabled"),
    ({"access_rule": {"field": "region", "op": "eq"}}, "access_rule"),
    ({"access_rule": "region = EU"}, "access_rule"),
    ({"notification_rule": {"consent": "no-such-purpose", "state": "granted"}},
     "notification_rule"),
    ({"email_footer": 12}, "email_footer"),
    ({"confirmation_hours": "48"}, "confirmation_hours"),
    ({"confirmation_hours": 0}, "confirmation_hours"),
    ({"unconfirmed_lead_retention_months": True}, "unconfirmed_lead_retention_months"),
    ({"colour": "blue"}, "colour"),
])
def test_api_bad_portal_settings_get_400_with_field_errors(admin_api, portal, field):
    response = admin_api.patch("/api/settings/", {"portal": {"enabled": True, **portal}},
                               format="json")
    assert response.status_code == 400
    assert field in response.json()["portal"], response.json()
    assert portal_settings().enabled is False


def test_api_settings_are_admin_only(staff_api):
    assert staff_api.get("/api/settings/").status_code == 403
    response = staff_api.patch("/api/settings/", {"portal": {"enabled": True}}, format="json")
    assert response.status_code == 403
    assert portal_settings().enabled is False


# -- the settings page ----------------------------------------------------------------------------

def test_settings_page_is_one_row_edited_in_place(admin_client_):
    listing = admin_client_.get("/admin/consents/portalsettings/")
    assert listing.status_code == 302
    assert listing["Location"] == f"/admin/consents/portalsettings/{portal_settings().pk}/change/"
    page = admin_client_.get(listing["Location"])
    assert page.status_code == 200
    html = page.content.decode()
    assert "Invitation runs" in html and "everyone" in html
    assert admin_client_.get("/admin/consents/portalsettings/add/").status_code == 403


def _form(**overrides):
    data = {"enabled": "", "access_rule": "", "notification_rule": "", "email_footer": "",
            "confirmation_hours": "48", "unconfirmed_lead_retention_months": "", "_save": "Save"}
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def test_settings_page_shows_readable_rule_errors(admin_client_):
    url = f"/admin/consents/portalsettings/{portal_settings().pk}/change/"
    page = admin_client_.post(url, _form(access_rule='{"field": "region", "op": "eq"}'))
    assert page.status_code == 200
    assert "&#x27;eq&#x27; needs a value" in page.content.decode()
    page = admin_client_.post(url, _form(notification_rule="{not json"))
    assert "Enter a valid JSON" in page.content.decode()
    assert portal_settings().access_rule == {}


def test_settings_page_enables_the_page_and_shows_the_run(
        admin_client_, django_capture_on_commit_callbacks, mailoutbox):
    PersonFactory(region="EU")
    url = f"/admin/consents/portalsettings/{portal_settings().pk}/change/"
    with django_capture_on_commit_callbacks(execute=True):
        saved = admin_client_.post(url, _form(enabled="on", access_rule='{"field": "region", '
                                              '"op": "eq", "value": "EU"}'))
    assert saved.status_code == 302
    row = portal_settings()
    assert row.enabled and row.access_rule == EU
    run = InvitationRun.objects.get()
    assert run.created_by.username == "ada.admin" and run.sent == 1
    listing = admin_client_.get("/admin/preferences_portal/invitationrun/").content.decode()
    assert "1 / 1 (100 %)" in listing
    assert len(mailoutbox) == 1


def test_staff_cannot_open_the_settings_page(staff_client):
    assert staff_client.get(
        f"/admin/consents/portalsettings/{portal_settings().pk}/change/").status_code == 403
    assert staff_client.get("/admin/preferences_portal/invitationrun/").status_code == 403
