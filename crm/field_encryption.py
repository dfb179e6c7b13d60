"""Switching a custom field to encrypted, and sealing the values already stored (a resumable
background job). Encryption is one way: the service refuses the reverse, and so does a database
trigger (migration 0005), so no path can switch it off."""

from django.db import transaction

from .models import FieldDefinition, Person
from .registry import SEALED, is_sealed


def _plain_values(key: str):
    """People holding a value for `key` that is not sealed yet."""
    return Person.objects.filter(custom__has_key=key).exclude(
        **{f"custom__{key}__has_key": SEALED}
    )


def encryption_progress(definition: FieldDefinition) -> tuple[int, int]:
    """(values sealed, values stored) for an encrypted custom field."""
    total = Person.objects.filter(custom__has_key=definition.key).count()
    return total - _plain_values(definition.key).count(), total


def seal_existing_batch(definition_id: int, *, batch_size: int = 500) -> int:
    """Seal up to `batch_size` stored plaintext values of an encrypted custom field.

    Returns how many were sealed; 0 means done. Rows are locked (SKIP LOCKED) and re-read inside
    the transaction, so a concurrent edit through the person service is never overwritten.
    Stopped records are included: sealing protects their data and changes no value.
    """
    from .services import _seal_custom  # the same sealing as every person write

    definition = FieldDefinition.objects.get(pk=definition_id)
    if not definition.is_encrypted or definition.is_core:
        return 0
    with transaction.atomic():
        rows = list(
            _plain_values(definition.key).select_for_update(skip_locked=True)
            .only("pk", "custom")[:batch_size]
        )
        for person in rows:
            # This definition, active or not: an inactive field's values are sealed too.
            person.custom = _seal_custom(
                {definition.key: person.custom[definition.key]}, subject_id=person.pk,
                definitions=[definition],
            ) | {k: v for k, v in person.custom.items() if k != definition.key}
        # Counted by what is sealed now, so a job can never go round on values it leaves be.
        rows = [person for person in rows if is_sealed(person.custom[definition.key])]
        Person.objects.bulk_update(rows, ["custom"])
    return len(rows)


def has_plain_values(key: str) -> bool:
    return _plain_values(key).exists()


def fields_to_seal() -> list[int]:
    """Ids of the encrypted custom fields that still hold values not sealed: the sweep
    re-queues their jobs, whatever stopped them (a lost message, a failed run, rows that
    stayed locked)."""
    return [d.pk for d in FieldDefinition.objects.filter(is_encrypted=True, is_core=False)
            if has_plain_values(d.key)]


