"""Celery tasks of crm: each takes ids, calls one service, and re-queues itself to continue."""

import time

from celery import shared_task
from django.db import InterfaceError, OperationalError

from . import field_encryption, imports

# How long one run of the sealing job seals batches before it re-queues itself: each batch
# commits, so a killed run loses at most one; without a broker (tasks inline) a long job is then
# a loop, not one nested call per batch.
SEAL_RUN_SECONDS = 20.0


@shared_task(acks_late=True)
def seal_custom_field_values(definition_id: int, batch_size: int = 500) -> int:
    """Seal a newly encrypted custom field's stored values, batch by batch (resumable)."""
    sealed, started = 0, time.monotonic()
    while True:
        done = field_encryption.seal_existing_batch(definition_id, batch_size=batch_size)
        sealed += done
        if not done:
            return sealed  # done; values in rows locked meanwhile are left to the sweep
        if time.monotonic() - started > SEAL_RUN_SECONDS:
            seal_custom_field_values.delay(definition_id, batch_size)
            return sealed


@shared_task(acks_late=True)
def sweep_unsealed_custom_values() -> list[int]:
    """Queue the sealing job of every encrypted custom field still holding values not sealed
    (periodic): a job whose message was lost, whose run failed, or whose last rows were locked
    is taken up again."""
    pending = field_encryption.fields_to_seal()
    for definition_id in pending:
        seal_custom_field_values.delay(definition_id)
    return pending


@shared_task(bind=True, acks_late=True, max_retries=5)
def run_import(self, job_id: str) -> None:
    """Run a queued people import; a transient database error retries, resuming after the last
    committed chunk."""
    try:
        imports.import_job_run(job_id)
    except (OperationalError, InterfaceError) as error:
        if self.request.retries >= self.max_retries:
            imports.import_job_fail(job_id=job_id, error=error)
            raise
        raise self.retry(countdown=5 * 2**self.request.retries) from error


@shared_task(acks_late=True)
def delete_unconfirmed_leads(batch_size: int = 500) -> int:
    """Retention: delete leads who never confirmed double opt-in after the admins' number of
    months (off unless set). The setting is consents' (crm never imports it): read through the
    function consents registered in crm.extensions.rights_settings. Re-queues while a full
    batch was deleted."""
    from . import extensions, rights

    setting = extensions.rights_settings.get("unconfirmed_lead_retention_months")
    deleted = rights.retention_delete_unconfirmed_leads(
        months=setting() if setting else None, limit=batch_size)
    if deleted == batch_size:
        delete_unconfirmed_leads.delay(batch_size)
    return deleted
