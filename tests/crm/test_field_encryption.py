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


def switch_on_without_the_job(definition, capture, **changes):
    """Switch a field to encrypted as an admin does, with the sealing job's message lost."""
    definition.is_encrypted = True
    for name, value in changes.items():
        setattr(definition, name, value)
    with capture(execute=False) as queued:
        services.field_definition_save(definition=definition)
    return queued


def test_an_inactive_field_switched_to_encrypted_has_its_values_sealed(
        django_capture_on_commit_callbacks):
    definition = FieldDefinitionFactory(key="tax_code")
    person = PersonFactory(custom={"tax_code": "RSSMRA85T10A562S"})
    with django_capture_on_commit_callbacks(execute=True):
        switch_on_without_the_job(definition, django_capture_on_commit_callbacks,
                                  active=False)  # retired and encrypted at once
        from crm.tasks import seal_custom_field_values

        assert seal_custom_field_values(definition.pk) == 1
    stored = Person.objects.get(pk=person.pk).custom["tax_code"]
    assert "RSSMRA85T10A562S" not in str(stored)
    from crm.field_encryption import encryption_progress

    assert encryption_progress(definition) == (1, 1)


def test_values_waiting_to_be_sealed_are_masked_to_staff_everywhere(
        staff_api, staff_client, django_capture_on_commit_callbacks):
    definition = FieldDefinitionFactory(key="tax_code")
    person = PersonFactory(email="x@example.org", custom={"tax_code": "RSSMRA85T10A562S"})
    switch_on_without_the_job(definition, django_capture_on_commit_callbacks,
                              mask_rule="last:3")
    assert Person.objects.get(pk=person.pk).custom["tax_code"] == "RSSMRA85T10A562S"  # waiting
    detail = staff_api.get(f"/api/persons/{person.pk}/")
    assert detail.json()["custom"]["tax_code"] == "•" * 13 + "62S"
    listing = staff_api.get("/api/persons/").content.decode()
    export = b"".join(staff_api.get("/api/persons/export/").streaming_content).decode()
    page = staff_client.get(f"/admin/crm/person/{person.pk}/change/").content.decode()
    for shown in (detail.content.decode(), listing, export, page):
        assert "RSSMRA85T10A562S" not in shown


def test_a_value_waiting_to_be_sealed_is_revealed_like_a_sealed_one(
        django_capture_on_commit_callbacks):
    from encryption.models import FieldAccessLog

    definition = FieldDefinitionFactory(key="tax_code")
    person = PersonFactory(custom={"tax_code": "RSSMRA85T10A562S"})
    switch_on_without_the_job(definition, django_capture_on_commit_callbacks)
    admin = AdminUserFactory()
    definition.reveal_groups.add(*admin.groups.all())
    assert person_reveal(person=person, field_key="tax_code", user=admin, reason="check",
                         ip=None) == "RSSMRA85T10A562S"
    assert FieldAccessLog.objects.count() == 1


def test_a_lost_sealing_job_is_queued_again_by_a_save_and_by_the_sweep(
        django_capture_on_commit_callbacks):
    from crm.tasks import sweep_unsealed_custom_values

    definition = FieldDefinitionFactory(key="tax_code")
    FieldDefinitionFactory(key="motto")  # not encrypted: nothing to seal
    done = FieldDefinitionFactory(key="sealed_note", is_encrypted=True)  # nothing waiting
    PersonFactory(custom={"tax_code": "RSSMRA85T10A562S", "motto": "hi", "sealed_note": "x"})
    assert len(switch_on_without_the_job(definition, django_capture_on_commit_callbacks)) == 1
    definition.label = "Tax code (again)"
    with django_capture_on_commit_callbacks(execute=False) as again:
        services.field_definition_save(definition=definition)
    assert len(again) == 1  # values still waiting: the job is queued again
    done.label = "Sealed note"
    with django_capture_on_commit_callbacks(execute=False) as nothing:
        services.field_definition_save(definition=done)
    assert nothing == []
    assert sweep_unsealed_custom_values() == [definition.pk]  # inline: sealed now
    assert sweep_unsealed_custom_values() == []


def test_a_long_sealing_job_requeues_itself_between_runs(monkeypatch,
                                                         django_capture_on_commit_callbacks):
    from crm import tasks

    definition = FieldDefinitionFactory(key="tax_code")
    for i in range(5):
        PersonFactory(custom={"tax_code": f"CODE{i}"})
    switch_on_without_the_job(definition, django_capture_on_commit_callbacks)
    monkeypatch.setattr(tasks, "SEAL_RUN_SECONDS", -1)  # every run ends after one batch
    queued = []
    monkeypatch.setattr(tasks.seal_custom_field_values, "delay",
                        lambda *args: queued.append(args))
    assert tasks.seal_custom_field_values(definition.pk, 2) == 2
    assert queued == [(definition.pk, 2)]
    monkeypatch.setattr(tasks, "SEAL_RUN_SECONDS", 60)
    assert tasks.seal_custom_field_values(definition.pk, 2) == 3  # one run, a loop of batches
    assert queued == [(definition.pk, 2)]


@pytest.mark.parametrize("rule", ["last4", "last:", "fixed:100", "all"])
def test_a_malformed_mask_rule_is_refused_with_a_field_error(rule):
    from django.core.exceptions import ValidationError

    definition = FieldDefinitionFactory(key="tax_code", is_encrypted=True)
    definition.mask_rule = rule
    with pytest.raises(ValidationError) as refused:
        services.field_definition_save(definition=definition)
    assert "mask_rule" in refused.value.message_dict
    assert FieldDefinition.objects.get(pk=definition.pk).mask_rule != rule


@pytest.mark.parametrize("path", ["queryset", "raw_delete", "raw_rename"])
def test_an_encrypted_field_cannot_be_deleted_or_renamed_by_any_path(path):
    definition = FieldDefinitionFactory(key="tax_code", is_encrypted=True)
    with pytest.raises((IntegrityError, InternalError)), transaction.atomic():
        if path == "queryset":
            FieldDefinition.objects.filter(pk=definition.pk).delete()
        else:
            with connection.cursor() as cursor:
                cursor.execute(
                    "DELETE FROM crm_fielddefinition WHERE id = %s" if path == "raw_delete"
                    else "UPDATE crm_fielddefinition SET key = 'tax_code_old' WHERE id = %s",
                    [definition.pk])
    assert FieldDefinition.objects.get(pk=definition.pk).key == "tax_code"
    plain = FieldDefinitionFactory(key="motto")
    FieldDefinition.objects.filter(pk=plain.pk).delete()  # a plain field may go
    assert not FieldDefinition.objects.filter(key="motto").exists()


def test_a_core_fields_mask_rule_is_shown_but_not_editable(admin_client_):
    definition = FieldDefinition.objects.get(key="card_number")
    page = admin_client_.get(f"/admin/crm/fielddefinition/{definition.pk}/change/")
    form = page.context["adminform"].form
    assert "mask_rule" not in form.fields and "last:4" in page.content.decode()
