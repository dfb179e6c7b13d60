"""Celery tasks of campaigns: each takes outbox row ids and calls the sender (campaigns.sender).

Both ack late: a worker killed mid-task has its message redelivered, and rows it had claimed
come back through the sweeper once their lease runs out.
"""

from celery import shared_task

from . import campaign_send, sender


@shared_task(acks_late=True)
def send_messages(message_ids: list[int]) -> int:
    """Send these outbox rows; those that failed transiently go again once their backoff is
    over (the rows count attempts and give up on their own). Run inline, the follow-up runs at
    once and finds nothing due yet: the sweeper picks those rows up later."""
    result = sender.send_batch(message_ids)
    if result.retry_ids:
        send_messages.apply_async([result.retry_ids], countdown=result.retry_in)
    for campaign_id in result.campaign_ids:
        campaign_send.campaign_finish_if_done(campaign_id)
    return result.sent


@shared_task(acks_late=True)
def sweep_outbox() -> int:
    """Re-dispatch rows left QUEUED or SENDING past their lease (every 30 s, from beat)."""
    swept = 0
    for ids in sender.requeue_stuck():
        send_messages.delay(ids)
        swept += len(ids)
    campaign_send.finish_campaigns()
    return swept


@shared_task(acks_late=True)
def start_campaign(campaign_id: int) -> int:
    """Materialise a campaign's audience into the outbox and fan it out (idempotent)."""
    return campaign_send.campaign_start(campaign_id)


@shared_task(acks_late=True)
def start_due_campaigns() -> int:
    """Start scheduled campaigns whose time has come (every 30 s, from beat)."""
    return campaign_send.start_due_campaigns()


@shared_task(acks_late=True)
def send_double_opt_in_batch(batch_id: int) -> dict:
    """Email the double opt-in request to a marketing list (resumable: see the service)."""
    from .double_opt_in import double_opt_in_batch_run

    return double_opt_in_batch_run(batch_id)
