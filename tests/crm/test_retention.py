"""Retention (issue 6, item 8): leads who never confirmed double opt-in are deleted after the
admins' number of months by a periodic task; off by default."""

from datetime import UTC, datetime

import pytest

from campaigns.emails import enqueue
from campaigns.models import EmailMessage
from config import clock
from consents.services import portal_settings_update
from crm import rights
from crm.models import AuditEntry, EmailOptIn, Person
from crm.tasks import delete_unconfirmed_leads
from tests.factories import PersonFactory

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def aged(months_ago: int, **kwargs) -> Person:
    person = PersonFactory(**kwargs)
    year, month = divmod(NOW.year * 12 + NOW.month - 1 - months_ago, 12)
    # created_at is set by the database clock on insert; age the row to test the cutoff.
    Person.objects.filter(pk=person.pk).update(created_at=NOW.replace(year=year, month=month + 1,
                                                                       day=1))
    return Person.objects.get(pk=person.pk)


def set_opt_in(person, state):
    Person.objects.filter(pk=person.pk).update(email_opt_in=state)


def test_retention_is_off_by_default():
    old = aged(48, kind="lead")
    with clock.frozen(NOW):
        assert delete_unconfirmed_leads.delay().get() == 0
    assert Person.objects.filter(pk=old.pk).exists()


def test_only_old_unconfirmed_unrestricted_leads_are_deleted():
    portal_settings_update(unconfirmed_lead_retention_months=6)
    doomed = [aged(7, kind="lead"), aged(12, kind="lead")]
    set_opt_in(doomed[1], EmailOptIn.SINGLE_OPT_IN_WEBFORM)
    confirmed = aged(12, kind="lead")
    set_opt_in(confirmed, EmailOptIn.DOUBLE_OPT_IN)
    kept = {
        "confirmed": confirmed,
        "contact": aged(12, kind="contact"),
        "young": aged(5, kind="lead"),
        "stopped": rights.processing_stop(person=aged(12, kind="lead"), source="portal"),
        "open_request": aged(12, kind="lead"),
        "erased": rights.person_erase(person=aged(12, kind="lead"), source="staff"),
    }
    rights.rights_request_record(person=kept["open_request"], kind="access", source="portal")
    enqueue(person=doomed[0], kind="adhoc", template="adhoc",
            context={"subject": "Hi", "body": "Hello"}, idempotency_key="retention:1")
    with clock.frozen(NOW):
        assert delete_unconfirmed_leads.delay().get() == 2
    assert not Person.objects.filter(pk__in=[p.pk for p in doomed]).exists()
    for name, person in kept.items():
        assert Person.objects.filter(pk=person.pk).exists(), name
    # Deleted through "Delete record": audited (no values) and every app forgot them too.
    assert AuditEntry.objects.filter(person_id=doomed[0].pk, action="delete",
                                     source="system").exists()
    assert EmailMessage.objects.get(idempotency_key="retention:1").to_address == ""


def test_the_task_works_in_batches_and_requeues_itself():
    portal_settings_update(unconfirmed_lead_retention_months=1)
    for _ in range(5):
        aged(3, kind="lead")
    with clock.frozen(NOW):
        delete_unconfirmed_leads.delay(2).get()
    assert not Person.objects.filter(kind="lead").exists()
