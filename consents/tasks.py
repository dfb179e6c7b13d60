from celery import shared_task

from . import services


@shared_task(acks_late=True)
def expire_consents() -> int:
    """Lapse grants past their time-to-live, in batches until none is due."""
    total = 0
    while lapsed := services.consent_expire_due():
        total += lapsed
    return total
