"""The page's reads: what every page shows alike is kept in each process's memory, checked
against the shared stamp read with the person's own rows, so an admin's change shows on the very
next view. Invalidation never touches a process's memory, only the database row: a write made
here proves what a write made by any other process (or the staff admin) does."""

import re

import pytest

from consents import services as consent_services
from consents.models import PurposeKind
from crm import services as crm_services
from crm.models import FieldDefinition, FieldType
from preferences_portal import selectors
from preferences_portal.models import SharedStamp
from tests.factories import PersonFactory
from tests.preferences_portal.conftest import set_portal

pytestmark = pytest.mark.django_db


def text_of(client, url) -> str:
    response = client.get(url)
    assert response.status_code == 200
    return re.sub(r"\s+", " ", response.content.decode())


def test_settings_change_shows_on_the_next_view(client, person, page_url):
    assert "Your consents" in text_of(client, page_url)
    set_portal(access_rule={"field": "region", "op": "eq", "value": "NA"})
    html = text_of(client, page_url)
    assert "Email subscriptions" in html and "Your consents" not in html
    set_portal(access_rule={}, enabled=False)
    assert "Your consents" not in text_of(client, page_url)
    set_portal(enabled=True)
    assert "Your consents" in text_of(client, page_url)


def test_purpose_changes_show_on_the_next_view(client, portal, person, page_url):
    assert "Offers from partners" in text_of(client, page_url)
    consent_services.purpose_publish_version(purpose=portal["partners"],
                                             title="Offers from our partners", text="Changed.")
    html = text_of(client, page_url)
    assert "Offers from our partners" in html and "Text version 2." in html
    partners = portal["partners"]
    partners.visibility_rule = {"field": "region", "op": "eq", "value": "NA"}
    consent_services.purpose_save(purpose=partners)
    assert "Offers from our partners" not in text_of(client, page_url)
    partners.visibility_rule, partners.active = None, False
    consent_services.purpose_save(purpose=partners)
    assert "Offers from our partners" not in text_of(client, page_url)
    consent_services.purpose_create(key="events", name="Events", kind=PurposeKind.CUSTOM,
                                    title="Invitations to our events", text="Now and then.")
    assert "Invitations to our events" in text_of(client, page_url)


def test_a_new_policy_shows_on_the_next_view(client, person, page_url):
    assert "How Consenso uses your data" in text_of(client, page_url)
    consent_services.policy_publish(title="Our data promise", text="Shorter and clearer.")
    html = text_of(client, page_url)
    assert "Our data promise" in html and "Version 2" in html


def test_a_field_registry_change_recompiles_the_rules_on_the_next_view(
        client, person, page_url):
    loyalty = crm_services.field_definition_save(definition=FieldDefinition(
        key="loyalty", label="Loyalty", field_type=FieldType.TEXT))
    crm_services.person_update(person=person, data={"custom": {"loyalty": "gold"}},
                               source="staff")
    set_portal(access_rule={"field": "loyalty", "op": "eq", "value": "gold"})
    assert "Your consents" in text_of(client, page_url)
    # The field now holds numbers: the kept compiled rule no longer fits, and the page fails
    # closed (only email preferences) instead of using it.
    loyalty.field_type = FieldType.NUMBER
    crm_services.field_definition_save(definition=loyalty)
    assert "Your consents" not in text_of(client, page_url)


def test_an_admin_change_through_the_staff_settings_page_shows_on_the_next_view(
        client, admin_client_, person, page_url):
    from consents.selectors import portal_settings

    assert "Your consents" in text_of(client, page_url)
    url = f"/admin/consents/portalsettings/{portal_settings().pk}/change/"
    saved = admin_client_.post(url, {"enabled": "", "access_rule": "", "notification_rule": "",
                                     "email_footer": "", "confirmation_hours": "48",
                                     "unconfirmed_lead_retention_months": "", "_save": "Save"})
    assert saved.status_code == 302
    assert "Your consents" not in text_of(client, page_url)


def test_shared_rows_are_read_once_while_the_stamp_holds(portal, django_assert_num_queries):
    stamp = SharedStamp.objects.get(pk=1).value
    first = selectors.shared_rows(stamp)
    with django_assert_num_queries(0):
        assert selectors.shared_rows(stamp) is first
    consent_services.policy_publish(title="Newer", text="Newer text.")
    newer = SharedStamp.objects.get(pk=1).value
    assert newer != stamp
    assert selectors.shared_rows(newer).policies[0].title == "Newer"


def test_without_a_stamp_nothing_is_kept(portal):
    assert selectors.shared_rows(None) is not selectors.shared_rows(None)


def test_a_rolled_back_change_never_brings_an_old_stamp_back(portal):
    from django.db import transaction

    before = SharedStamp.objects.get(pk=1).value
    with pytest.raises(RuntimeError), transaction.atomic():
        consent_services.policy_publish(title="Abandoned", text="Never committed.")
        assert SharedStamp.objects.get(pk=1).value != before
        raise RuntimeError
    assert SharedStamp.objects.get(pk=1).value == before
    consent_services.policy_publish(title="Kept", text="Committed.")
    assert SharedStamp.objects.get(pk=1).value not in (before, "initial")


def test_the_persons_own_rows_are_read_fresh_on_every_view(client, portal, person, page_url):
    """Lists and consents are the person's own: never kept between views."""
    from consents.models import Source, Verification
    from tests.factories import MarketingListFactory

    crm_services.marketing_list_add(marketing_list=MarketingListFactory(name="Webinars"),
                                    person_ids=[person.pk], source="staff")
    assert "Webinars" in text_of(client, page_url)
    other = PersonFactory()
    assert "Webinars" not in text_of(client, f"/p/{_token(other)}/")
    consent_services.consent_revoke(person=person, purpose=portal["tracking"],
                                    source=Source.IMPORT, verified_by=Verification.NONE)
    assert 'value="revoked" id="consent-tracking-revoked" checked' in text_of(client, page_url)


def _token(person):
    from crm.tokens import make_token

    return make_token(person, purpose="portal")


def test_a_renamed_mailing_list_shows_on_the_next_view(client, person, page_url):
    from crm.models import MarketingList

    assert "Newsletter" in text_of(client, page_url)
    newsletter = MarketingList.objects.get(name="Newsletter")
    newsletter.name, newsletter.description = "Monthly letter", "Once a month."
    crm_services.marketing_list_save(marketing_list=newsletter)
    html = text_of(client, page_url)
    assert "Monthly letter" in html and "Once a month." in html and "Newsletter" not in html


def test_the_prepared_person_read_gives_what_the_queryset_gives(portal, person):
    """The page reads the person through `page_people` (a statement prepared per connection on
    PostgreSQL): the same columns, decrypted fields and own rows as `with_own_rows`."""
    from consents.models import Source, Verification
    from crm.models import Person
    from tests.factories import MarketingListFactory

    crm_services.marketing_list_add(marketing_list=MarketingListFactory(name="Webinars"),
                                    person_ids=[person.pk], source="staff")
    consent_services.consent_revoke(person=person, purpose=portal["tracking"],
                                    source=Source.IMPORT, verified_by=Verification.NONE)
    expected = selectors.with_own_rows(Person.objects).get(pk=person.pk)
    found = selectors.page_people().get(pk=person.pk)
    names = [f.attname for f in Person._meta.concrete_fields]
    own = ["page_consents", "page_lists", "page_pending", "page_revealed", "page_stamp"]
    assert found == person and found.email == person.email
    assert ([getattr(found, n) for n in names + own]
            == [getattr(expected, n) for n in names + own])
    with pytest.raises(Person.DoesNotExist):
        selectors.page_people().get(pk=PersonFactory.build().pk)


def test_the_prepared_person_read_outlives_a_rolled_back_transaction(portal, person):
    """A statement prepared inside a transaction that rolls back stays prepared (PostgreSQL's
    PREPARE is per session, not per transaction): the next read still works."""
    from django.db import connection, transaction

    if connection.vendor == "postgresql":  # as on a new connection: prepared inside the block
        with connection.cursor() as cursor:
            cursor.execute("DEALLOCATE ALL")
        connection._page_person_prepared = None
    try:
        with transaction.atomic():
            assert selectors.page_people().get(pk=person.pk) == person
            raise RuntimeError
    except RuntimeError:
        pass
    assert selectors.page_people().get(pk=person.pk) == person
