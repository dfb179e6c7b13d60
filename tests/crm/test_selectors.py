"""crm.selectors: lookups by address."""

import pytest
from django.db import connection, transaction

from config import clock
from crm.models import Person
from crm.selectors import addresses_known, people_with_addresses
from tests.factories import PersonFactory

pytestmark = pytest.mark.django_db


def test_a_batch_lookup_of_many_addresses_can_use_the_unique_address_index():
    """PostgreSQL proves that an IN list implies a partial index's condition only up to 100
    values: the lookup states the condition itself, so no other index on the address is needed
    for an import's chunk."""
    from crm.imports import CHUNK_ROWS

    wanted = [f"p{i}@example.org" for i in range(CHUNK_ROWS)]
    found = PersonFactory(email=wanted[1234])
    PersonFactory(email="other@example.org")
    people = people_with_addresses(wanted)
    assert list(people.values_list("pk", flat=True)) == [found.pk]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # show what it can use, not what is
        plan = people.explain()  # cheapest on a test table of two rows
    assert "person_email_unique" in plan



def test_addresses_known_maps_each_known_address_to_the_column_asked_for():
    stopped_at = clock.now()
    stopped = PersonFactory(email="stopped@example.org")
    Person.objects.filter(pk=stopped.pk).update(processing_stopped_at=stopped_at)
    active = PersonFactory(email="active@example.org")
    PersonFactory(email="")  # no address: never a match, not even for ""
    wanted = ["stopped@example.org", "active@example.org", "unknown@example.org", "",
              "active@example.org"]

    assert addresses_known(wanted, "processing_stopped_at") == {
        "stopped@example.org": stopped_at, "active@example.org": None}
    assert addresses_known(iter(wanted), "id") == {
        "stopped@example.org": stopped.pk, "active@example.org": active.pk}
    assert addresses_known([], "id") == {}


def test_addresses_known_leaves_the_callers_transaction_as_it_found_it():
    """The lookup turns sequential scans off for itself only: inside a caller's transaction
    the setting would otherwise last until that transaction ends."""
    PersonFactory(email="a@example.org")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SHOW enable_seqscan")
        before = cursor.fetchone()[0]
        assert addresses_known(["a@example.org"], "email") == {"a@example.org": "a@example.org"}
        cursor.execute("SHOW enable_seqscan")
        assert cursor.fetchone()[0] == before == "on"
        PersonFactory(email="b@example.org")  # the caller's transaction goes on
    assert Person.objects.filter(email="b@example.org").exists()
