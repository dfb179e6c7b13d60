"""Links are unguessable: random page tokens and confirmation secrets are never accepted."""

import secrets

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from crm.models import Person
from crm.tokens import TAG_HEX, make_token, person_for_token
from preferences_portal import services
from preferences_portal.models import PendingChange

pytestmark = pytest.mark.django_db
TRIES = 10_000


def test_page_token_is_a_128_bit_keyed_hash_with_no_personal_data(person):
    token = make_token(person, purpose="portal")
    raw_id, tag = token.split("-")
    assert raw_id == person.pk.hex and len(tag) * 4 == TAG_HEX * 4 >= 128
    assert "giulia" not in token.lower() and "example" not in token


def test_ten_thousand_random_page_tokens_are_all_refused(person):
    prefix = person.pk.hex + "-"  # even knowing the person's id
    refused = sum(person_for_token(prefix + secrets.token_hex(TAG_HEX // 2), purpose="portal")
                  is None for _ in range(TRIES))
    assert refused == TRIES
    assert person_for_token(make_token(person, purpose="portal"), purpose="portal") == person


def test_bumping_the_key_version_kills_every_page_link(person):
    token = make_token(person, purpose="portal")
    Person.objects.filter(pk=person.pk).update(portal_key_version=person.portal_key_version + 1)
    assert person_for_token(token, purpose="portal") is None


def test_ten_thousand_random_confirmation_secrets_are_all_refused(
        person, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        services.pending_change_submit(person=person, wanted={"processing": "stop"})
    refused = 0
    for _ in range(TRIES):
        try:
            services.pending_change_find(secrets.token_urlsafe(32))
        except services.ChangeLinkInvalid:
            refused += 1
    assert refused == TRIES
    assert PendingChange.objects.get().state == "pending"


def test_confirmation_secret_is_looked_up_by_its_hash_in_one_query(person):
    with CaptureQueriesContext(connection) as queries, \
            pytest.raises(services.ChangeLinkInvalid):
        services.pending_change_find("guess")
    assert len(queries) == 1
    assert services.token_hash("guess") in queries[0]["sql"]


def test_a_token_is_checked_the_same_whatever_queryset_the_person_is_read_from(person):
    from preferences_portal.selectors import with_own_rows

    token = make_token(person, purpose="portal")
    found = person_for_token(token, purpose="portal", people=with_own_rows(Person.objects.all()))
    assert found == person and found.page_stamp
    assert person_for_token(token, purpose="portal",
                            people=Person.objects.filter(kind="nobody")) is None
    forged = token[:-4] + ("0000" if token[-4:] != "0000" else "1111")
    assert person_for_token(forged, purpose="portal",
                            people=with_own_rows(Person.objects.all())) is None
