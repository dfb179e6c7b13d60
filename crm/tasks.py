"""Celery tasks of crm: each takes ids, calls one service, and re-queues itself to continue."""

from celery import shared_task

from . import field_encryption


@shared_task(acks_late=True)
def seal_custom_field_values(definition_id: int, batch_size: int = 500) -> int:
    """Seal a newly encrypted custom field's stored values, one batch per run (resumable)."""
    sealed = field_encryption.seal_existing_batch(definition_id, batch_size=batch_size)
    if sealed:
        seal_custom_field_values.delay(definition_id, batch_size)
    return sealed
