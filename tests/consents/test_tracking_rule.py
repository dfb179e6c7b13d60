"""The engagement-tracking rule, read two ways: tracking_allowed_ids (one query, many people)
and tracking_state_allows (one answer, shown by the explain endpoint). They must agree."""

import itertools

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from consents import selectors, services
from consents.models import ConsentPurpose, PurposeKind, Source, Verification
from crm import rights
from tests.factories import PersonFactory

pytestmark = pytest.mark.django_db
CONFIRMED = {"source": Source.PORTAL, "verified_by": Verification.EMAIL_CONFIRMATION}
STATES = ("unknown", "pending", "granted", "revoked")


def tracking_purpose(key):
    return services.purpose_create(key=key, name=key.title(),
                                   kind=PurposeKind.ENGAGEMENT_TRACKING, title="T", text="T")


def answer(person, purpose, state):
    record = {"granted": services.consent_grant, "revoked": services.consent_revoke,
              "pending": services.consent_request}.get(state)
    if record:
        record(person=person, purpose=purpose, **CONFIRMED)


@pytest.mark.parametrize("default", [False, True])
def test_selector_and_predicate_agree_on_every_pair_of_answers(default):
    services.settings_update(tracking_default_when_unknown=default)
    opens, clicks = tracking_purpose("opens"), tracking_purpose("clicks")
    people = {}
    for first, second in itertools.product(STATES, STATES):
        person = PersonFactory()
        answer(person, opens, first)
        answer(person, clicks, second)
        people[person.pk] = (first, second)

    with CaptureQueriesContext(connection) as queries:
        allowed = selectors.tracking_allowed_ids(people)
    assert len(queries) == 1

    expected = {pk for pk, states in people.items()
                if all(selectors.tracking_state_allows(s, default=default) for s in states)}
    assert allowed == expected
    # Spot checks of the table: every purpose must allow.
    by_states = {states: pk for pk, states in people.items()}
    assert by_states[("granted", "granted")] in allowed
    assert by_states[("granted", "revoked")] not in allowed
    assert (by_states[("granted", "unknown")] in allowed) is default


@pytest.mark.parametrize("default", [False, True])
def test_without_an_active_tracking_purpose_the_setting_decides(default):
    services.settings_update(tracking_default_when_unknown=default)
    retired = tracking_purpose("old_tracking")
    person = PersonFactory()
    answer(person, retired, "revoked")
    ConsentPurpose.objects.filter(pk=retired.pk).update(active=False)
    assert selectors.tracking_allowed(person) is default


def test_default_applies_before_the_settings_row_exists():
    person = PersonFactory()
    tracking_purpose("tracking")
    assert selectors.tracking_allowed_ids([person.pk]) == set()  # the model default is off


def test_stopped_or_erased_people_are_never_tracked():
    services.settings_update(tracking_default_when_unknown=True)
    stopped, erased, kept = PersonFactory(), PersonFactory(), PersonFactory()
    rights.processing_stop(person=stopped, source="portal")
    rights.person_erase(person=erased, source="staff")
    assert selectors.tracking_allowed_ids([stopped.pk, erased.pk, kept.pk]) == {kept.pk}


@pytest.mark.parametrize(("state", "default"),
                         list(itertools.product(STATES, (False, True))))
def test_explain_shows_the_same_tracking_decision(staff_api, state, default):
    services.settings_update(tracking_default_when_unknown=default)
    purpose = tracking_purpose("tracking")
    person = PersonFactory()
    answer(person, purpose, state)
    entry = staff_api.get(f"/api/persons/{person.pk}/explain/").json()["consents"]["tracking"]
    assert entry["state"] == state
    assert entry["allowed"] is selectors.tracking_allowed(person)
    assert entry["decided_by"] == ("event" if state in ("granted", "revoked")
                                   else "setting:tracking.default_when_unknown")
