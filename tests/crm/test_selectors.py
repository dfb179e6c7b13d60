"""crm.selectors: lookups by address."""

import pytest
from django.db import connection

from crm.selectors import people_with_addresses
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
