"""The database has what the models declare: every index and constraint by name (a migration
that drops one by accident leaves the model state, and so makemigrations, none the wiser)."""

import pytest
from django.apps import apps
from django.db import IntegrityError, connection, transaction

from crm.models import Person

pytestmark = pytest.mark.django_db


def test_every_declared_index_and_constraint_exists_in_the_database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() "
                       "UNION SELECT conname FROM pg_constraint")
        present = {name for (name,) in cursor.fetchall()}
    declared = {(model._meta.label, item.name) for model in apps.get_models()
                for item in (*model._meta.indexes, *model._meta.constraints)}
    assert {(label, name) for label, name in declared if name not in present} == set()


def test_the_database_refuses_a_second_person_with_the_same_address():
    Person.objects.create(email="twice@example.org")
    with pytest.raises(IntegrityError), transaction.atomic():
        Person.objects.create(email="twice@example.org")
    Person.objects.create(email="")  # no address: as many as there are
    Person.objects.create(email="")
