import pytest
from django.db import IntegrityError, InternalError, connection, transaction

from crm import services
from crm.models import FieldDefinition, Person
from crm.reveal import person_reveal
from tests.factories import AdminUserFactory, FieldDefinitionFactory, PersonFactory

pytestmark = pytest.mark.django_db


def test_switching_a_field_with_data_to_encrypted_seals_stored_values(
    django_capture_on_commit_callbacks,
):
    definition = FieldDefinitionFactory(key="tax_code")
    people = [PersonFactory(custom={"tax_code": f"CODE{i:04d}"}) for i in range(7)]
    PersonFactory()  # no value: nothing to seal
    definition.is_encrypted = True
    definition.mask_rule = "last:2"
    with django_capture_on_commit_callbacks(execute=True):
        services.field_definition_save(definition=definition)
    for i, person in enumerate(people):
        stored = Person.objects.get(pk=person.pk).custom["tax_code"]
        assert f"CODE{i:04d}" not in str(stored) and stored["mask"].endswith(f"{i:02d}")
    admin = AdminUserFactory()
    definition.reveal_groups.add(*admin.groups.all())
    assert person_reveal(person=people[3], field_key="tax_code", user=admin, reason="check",
                         ip=None) == "CODE0003"
    from crm.field_encryption import encryption_progress

    assert encryption_progress(definition) == (7, 7)


@pytest.mark.parametrize("path", ["service", "queryset", "raw_sql"])
def test_encryption_cannot_be_switched_off_by_any_path(path):
    definition = FieldDefinitionFactory(key="secret_note", is_encrypted=True)
    if path == "service":
        definition.is_encrypted = False
        with pytest.raises(Exception, match="cannot be switched off"):
            services.field_definition_save(definition=definition)
    else:
        with pytest.raises((IntegrityError, InternalError, Exception)), transaction.atomic():
            if path == "queryset":
                FieldDefinition.objects.filter(pk=definition.pk).update(is_encrypted=False)
            else:
                with connection.cursor() as cursor:
                    cursor.execute("UPDATE crm_fielddefinition SET is_encrypted = false "
                                   "WHERE id = %s", [definition.pk])
    assert FieldDefinition.objects.get(pk=definition.pk).is_encrypted


def test_admin_requires_confirmation_before_switching_encryption_on(
    admin_client_, django_capture_on_commit_callbacks
):
    definition = FieldDefinitionFactory(key="tax_code", label="Tax code")
    PersonFactory(custom={"tax_code": "PLAIN1"})
    url = f"/admin/crm/fielddefinition/{definition.pk}/change/"
    form = {"label": "Tax code", "field_type": "text", "choices": "[]", "position": 100,
            "active": "on", "is_pii": "on", "is_encrypted": "on", "mask_rule": "last:2",
            "help_text": ""}
    refused = admin_client_.post(url, form)
    assert "confirm_encryption" in refused.context["adminform"].form.errors
    assert not FieldDefinition.objects.get(pk=definition.pk).is_encrypted
    with django_capture_on_commit_callbacks(execute=True):
        done = admin_client_.post(url, {**form, "confirm_encryption": "on"})
    assert done.status_code == 302
    assert FieldDefinition.objects.get(pk=definition.pk).is_encrypted
    page = admin_client_.get(url).content.decode()
    assert "1 of 1 stored values encrypted" in page
