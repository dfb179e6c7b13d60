"""Switching a custom field to encrypted, and sealing the values already stored (a resumable
background job). Encryption is one way: the service refuses the reverse, and so does a database
trigger (migration 0005), so no path can switch it off."""

from django.db import transaction

from .models import FieldDefinition, Person
from .registry import SEALED


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
            person.custom = _seal_custom(
                {definition.key: person.custom[definition.key]}, subject_id=person.pk
            ) | {k: v for k, v in person.custom.items() if k != definition.key}
        Person.objects.bulk_update(rows, ["custom"])
    return len(rows)


def has_plain_values(key: str) -> bool:
    return _plain_values(key).exists()


