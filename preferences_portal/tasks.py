"""Celery tasks of the preference page: each takes ids and calls a service."""

from celery import shared_task

from . import invitations


@shared_task(bind=True, acks_late=True)
def send_invitations(self, run_id: int) -> None:
    """Invite one batch of a run, then queue the next one a pause later (the throttle:
    PORTAL_INVITES_PER_MINUTE). Resumable: a killed worker's batch rolled back, and the
    redelivered task starts again from the run's resume point."""
    while invitations.invitation_run_step(run_id):
        if not self.request.is_eager:
            send_invitations.apply_async([run_id], countdown=invitations.pause_seconds())
            return
        # Tasks run inline (development, tests): no broker to wait on, so go on at once
        # instead of recursing once per batch.
