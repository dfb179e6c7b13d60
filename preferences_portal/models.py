"""What the preference page stores: changes waiting for the contact's emailed confirmation, and
the background runs that email invitations to the page.

No token is stored in clear: a confirmation link carries a random secret and only its keyed hash
is kept here, so a database reader cannot confirm anyone's change.
"""

import uuid

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class PendingChange(models.Model):
    """A change a contact submitted on their page, applied only when they follow the link
    mailed to the address on file (so a forwarded email cannot change their choices)."""

    class State(models.TextChoices):
        PENDING = "pending", _("Waiting for confirmation")
        APPLIED = "applied", _("Confirmed and applied")
        SUPERSEDED = "superseded", _("Replaced by a newer change")
        EXPIRED = "expired", _("Expired")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    person = models.ForeignKey("crm.Person", on_delete=models.CASCADE,
                               related_name="pending_changes")
    # What to apply, by kind of choice (consents, opt-out, lists, stop/resume, erasure, …);
    # ids and states only, no personal values.
    changes = models.JSONField(_("changes"), default=dict)
    token_hash = models.CharField(max_length=64, unique=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    language = models.CharField(max_length=8, blank=True)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["person", "state"], name="pending_person_state")]
        verbose_name = _("pending change")

    def __str__(self):
        return f"{self.get_state_display()} ({self.created_at:%Y-%m-%d %H:%M})"


class InvitationRun(models.Model):
    """One background mailing of preference-page invitations (page enabled, a purpose added,
    a re-permission request), with its progress and counts by the gateway's reasons."""

    class Reason(models.TextChoices):
        ENABLED = "enabled", _("Preference page enabled")
        NEW_PURPOSE = "new_purpose", _("New consent purpose")
        REPERMISSION = "repermission", _("Consent text changed: asking again")

    class State(models.TextChoices):
        QUEUED = "queued", _("Queued")
        RUNNING = "running", _("Running")
        DONE = "done", _("Done")
        FAILED = "failed", _("Failed")

    reason = models.CharField(max_length=16, choices=Reason.choices)
    purpose = models.ForeignKey("consents.ConsentPurpose", null=True, blank=True,
                                on_delete=models.SET_NULL, related_name="+")
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    total = models.PositiveIntegerField(default=0)
    processed = models.PositiveIntegerField(default=0)
    sent = models.PositiveIntegerField(default=0)
    skipped = models.JSONField(_("skipped, by reason"), default=dict, blank=True)
    # Resume point: people are walked in primary-key order.
    last_person_id = models.UUIDField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("invitation run")

    def __str__(self):
        return f"{self.get_reason_display()} — {self.get_state_display()}"


class SharedStamp(models.Model):
    """One row whose value changes whenever a row that every preference page shows alike changes
    (the portal settings, purposes and their texts, the policy, the mailing lists' names, the
    field registry the rules are compiled against). A process keeps those rows in memory and
    reads this stamp with the page's own query: it is in the database, not the cache, so it
    changes in the writer's transaction, holds in every process whatever the cache backend, and
    rolls back with the write."""

    value = models.CharField(max_length=32)

    def __str__(self):
        return self.value
