import pytest
from django.core.exceptions import FieldError, ValidationError
from django.db import connection

from crm import services
from crm.models import Person
from crm.selectors import find_by_identifier, person_filter
from encryption.cipher import DecryptionError
from encryption.datakeys import destroy_data_key
from encryption.fields import Sealed
from encryption.values import open_value
from tests.factories import FieldDefinitionFactory, PersonFactory

pytestmark = pytest.mark.django_db
CARD = "4111111111111111"


def raw_column(person, column):
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM crm_person WHERE id = %s", [person.pk])  # noqa: S608
        return cursor.fetchone()[0]


def test_sensitive_value_is_sealed_at_rest_and_masked_everywhere():
    person = PersonFactory(card_number="4111 1111 1111 1111", national_id="ab-123456")
    assert CARD.encode() not in bytes(raw_column(person, "card_number"))
    loaded = Person.objects.get(pk=person.pk)
    assert isinstance(loaded.card_number, Sealed)
    assert str(loaded.card_number) == "••••••••••••1111"
    assert loaded.national_id_mask == "•••••3456"
    assert open_value(loaded.card_number.blob, subject_id=person.pk,
                      context="crm.person.card_number") == CARD


def test_ciphertext_copied_to_another_person_does_not_decrypt():
    alice = PersonFactory(card_number=CARD)
    bob = PersonFactory()
    Person.objects.filter(pk=bob.pk).update(card_number=None)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE crm_person SET card_number = (SELECT card_number FROM crm_person "
                       "WHERE id = %s) WHERE id = %s", [alice.pk, bob.pk])
    stolen = Person.objects.get(pk=bob.pk).card_number
    with pytest.raises(DecryptionError):
        open_value(stolen.blob, subject_id=bob.pk, context="crm.person.card_number")
    with pytest.raises(DecryptionError):
        open_value(stolen.blob, subject_id=bob.pk, context="crm.person.national_id")


@pytest.mark.parametrize("lookup", [
    {"card_number": CARD}, {"card_number__contains": "1111"}, {"card_number__startswith": "4"},
    {"national_id__in": ["x"]},
])
def test_only_isnull_lookups_are_allowed(lookup):
    with pytest.raises(FieldError, match="encrypted"):
        list(Person.objects.filter(**lookup))


def test_isnull_lookup_works():
    with_card = PersonFactory(card_number=CARD)
    PersonFactory()
    assert list(Person.objects.filter(card_number__isnull=False)) == [with_card]


def test_ordering_by_an_encrypted_field_leaks_nothing_useful():
    # Ordering by ciphertext is allowed by the database but meaningless; the API and admin do
    # not offer it. The mask column is what lists sort and show.
    PersonFactory(card_number=CARD)
    assert Person.objects.order_by("card_number_mask").count() == 1


def test_update_and_bulk_update_keep_mask_and_index_in_step():
    people = PersonFactory.create_batch(3)
    Person.objects.filter(pk__in=[p.pk for p in people]).update(card_number=CARD)
    for person in Person.objects.all():
        assert person.card_number_mask.endswith("1111")
        assert person.card_number_bidx
    assert set(find_by_identifier("card_number", CARD)) == {p.pk for p in people}
    loaded = list(Person.objects.all())
    for person in loaded:
        person.card_number = "5555555555554444"
    Person.objects.bulk_update(loaded, ["card_number"])
    assert {p.card_number_mask for p in Person.objects.all()} == {"••••••••••••4444"}
    assert find_by_identifier("card_number", CARD) == []
    Person.objects.update(card_number=None)
    assert set(Person.objects.values_list("card_number_mask", flat=True)) == {""}


def test_search_finds_exposed_characters_and_exact_identifiers_only():
    person = PersonFactory(national_id="XY987654", email="n@example.org")
    PersonFactory(email="other@example.org")
    found = lambda term: set(person_filter({"search": term}).values_list("pk", flat=True))  # noqa: E731
    assert found("7654") == {person.pk}
    assert found("XY987654") == {person.pk}  # blind index, re-checked after decryption
    assert found("XY98") == set()  # hidden characters are not searchable


def test_search_finds_the_exposed_characters_of_encrypted_custom_fields_only():
    FieldDefinitionFactory(key="tax_code", is_encrypted=True, mask_rule="last:3")
    person = PersonFactory(custom={"tax_code": "RSSMRA85T10A562S"})
    PersonFactory(custom={"tax_code": "BNCLRA80A41H501X"})
    found = lambda term: set(person_filter({"search": term}).values_list("pk", flat=True))  # noqa: E731
    assert found("62s") == {person.pk}
    assert found("RSSMRA") == set()  # hidden


def test_crypto_shredding_leaves_values_unreadable():
    person = PersonFactory(card_number=CARD, national_id="AB123456")
    blob = Person.objects.get(pk=person.pk).card_number.blob
    assert destroy_data_key(person.pk)
    with pytest.raises(DecryptionError):
        open_value(blob, subject_id=person.pk, context="crm.person.card_number")
    assert find_by_identifier("card_number", CARD) == []


def test_encrypted_custom_field_is_sealed_and_masked():
    FieldDefinitionFactory(key="tax_code", is_encrypted=True, mask_rule="last:3")
    person = PersonFactory(custom={"tax_code": "RSSMRA85T10A562S"})
    stored = Person.objects.get(pk=person.pk).custom["tax_code"]
    assert "RSSMRA85T10A562S" not in str(stored)
    assert stored["mask"] == "•" * 13 + "62S"


def test_mask_echoed_back_is_refused():
    person = PersonFactory(card_number=CARD)
    with pytest.raises(ValidationError, match="masked value"):
        services.person_update(person=person, data={"card_number": "••••••••••••1111"},
                               source="api")


@pytest.mark.parametrize("bad", ["4111111111111112", "12345", "abcd efgh ijkl mnop"])
def test_invalid_card_numbers_are_refused(bad):
    with pytest.raises(ValidationError, match="card number"):
        PersonFactory(card_number=bad)


def test_save_with_update_fields_naming_an_encrypted_field_writes_its_mask_and_index():
    from crm.models import Person
    from crm.selectors import find_by_identifier

    person = Person.objects.get(pk=PersonFactory(card_number="4111111111111111").pk)
    person.card_number = "5555555555554444"
    person.save(update_fields=["card_number"])
    stored = Person.objects.get(pk=person.pk)
    assert stored.card_number_mask == "••••••••••••4444"
    assert find_by_identifier("card_number", "5555555555554444") == [person.pk]
    assert find_by_identifier("card_number", "4111111111111111") == []
