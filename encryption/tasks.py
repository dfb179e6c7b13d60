from celery import shared_task

from .rotation import rotate


@shared_task(acks_late=True)
def rotate_keys(batch_size: int = 1000) -> int:
    """Re-wrap data keys under the primary master key; resumable, so a retry just continues."""
    return rotate(batch_size=batch_size)["rewrapped"]
