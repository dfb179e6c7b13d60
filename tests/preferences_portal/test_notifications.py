""""Your preference page was opened": only for people the notification rule admits, at most
once per 24 hours, cheap on the page's hot path, and never able to break the page."""

from datetime import timedelta
from unittest import mock

import pytest
from django.core.cache import cache

from campaigns.models import EmailMessage
from campaigns.optin import Actor, opt_in_change
from config import clock
from consents import services as consent_services
from consents.models import Verification
from consents.selectors import portal_settings
from preferences_portal import notifications
from preferences_portal.notifications import page_accessed
from tests.factories import PersonFactory

pytestmark = pytest.mark.django_db

ITALY = {"field": "country", "op": "eq", "value": "IT"}


def notices(person):
    return EmailMessage.objects.filter(person=person, template="portal_accessed")


@pytest.fixture
def notify_italy():
    consent_services.portal_settings_update(enabled=True, notification_rule=ITALY)


def test_people_the_rule_admits_are_told_once_per_24_hours(
        notify_italy, django_capture_on_commit_callbacks, mailoutbox):
    person = PersonFactory(country="IT")
    start = clock.now()
    with django_capture_on_commit_callbacks(execute=True):
        assert page_accessed(person) is True
    assert [m.to for m in mailoutbox] == [[person.email]]
    assert mailoutbox[0].subject == "Your preference page was opened"
    assert notices(person).get().kind == "system"
    with clock.frozen(start + timedelta(hours=23, minutes=59)):
        assert page_accessed(person) is False
    with clock.frozen(start + timedelta(hours=24, minutes=1)):
        assert page_accessed(person) is True
        assert page_accessed(person) is False
    assert notices(person).count() == 2


def test_people_outside_the_rule_are_not_told(notify_italy):
    person = PersonFactory(country="FR")
    assert page_accessed(person) is False
    assert not notices(person).exists()


def test_an_empty_rule_tells_nobody_and_costs_no_query(django_assert_num_queries):
    person = PersonFactory(country="IT")
    portal = portal_settings()
    with django_assert_num_queries(0):
        assert page_accessed(person, portal=portal) is False
    assert page_accessed(person) is False  # reading the settings itself
    assert not notices(person).exists()


def test_a_repeat_view_costs_one_cache_read_and_no_query(notify_italy,
                                                         django_assert_num_queries):
    person = PersonFactory(country="IT")
    page_accessed(person)
    with django_assert_num_queries(0):
        assert page_accessed(person) is False


def test_a_repeat_page_view_with_a_notification_rule_still_costs_the_pages_one_query(
        notify_italy, client, django_assert_num_queries):
    from crm.tokens import make_token

    person = PersonFactory(country="IT")
    url = f"/p/{make_token(person, purpose='portal')}/"
    assert client.get(url).status_code == 200  # first view: the notice (and its check)
    with mock.patch.object(cache, "get", wraps=cache.get) as reads, \
            django_assert_num_queries(1):
        assert client.get(url).status_code == 200
    assert [c.args[0] for c in reads.call_args_list] == [notifications._cache_key(person.pk)]
    assert notices(person).count() == 1


def test_the_mail_log_backs_the_limit_up_when_the_cache_was_cleared(notify_italy):
    person = PersonFactory(country="IT")
    assert page_accessed(person) is True
    cache.delete(notifications._cache_key(person.pk))
    assert page_accessed(person) is False
    assert notices(person).count() == 1


def test_with_the_cache_down_the_page_still_works_and_the_log_still_limits(notify_italy):
    person = PersonFactory(country="IT")
    with mock.patch.object(notifications.cache, "get", side_effect=ConnectionError("down")):
        assert page_accessed(person) is True
        assert page_accessed(person) is False
    assert notices(person).count() == 1


def test_a_failing_notification_never_breaks_the_page(notify_italy):
    person = PersonFactory(country="IT")
    with mock.patch.object(notifications.emails, "enqueue", side_effect=RuntimeError("boom")):
        assert page_accessed(person) is False
    assert not notices(person).exists()


def test_an_opted_out_person_is_still_told_unless_the_rule_says_otherwise(admin_user_):
    # A security notice about their own data (mail kind system), like a change confirmation.
    person = PersonFactory(country="IT")
    opt_in_change(person=person, actor=Actor.CONTACT, verified_by=Verification.NONE)
    consent_services.portal_settings_update(enabled=True, notification_rule=ITALY)
    assert page_accessed(person) is True
    other = PersonFactory(country="IT")
    other = opt_in_change(person=other, actor=Actor.CONTACT, verified_by=Verification.NONE)
    consent_services.portal_settings_update(notification_rule={"all": [
        ITALY, {"not": {"opt_in": ["opt_out_contact", "opt_out_user"]}}]})
    assert page_accessed(other) is False
