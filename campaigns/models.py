"""Email: the outbox and mail log, web forms, double opt-in, campaigns and their tracking."""

import uuid

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class MailboxMessage(models.Model):
    """A message kept by the development email backend instead of being sent.

    It exists so a newcomer running `make run` can open every email (and follow its links) from
    the staff UI. With EMAIL_URL set, nothing is stored here.
    """

    message_id = models.CharField(max_length=255, blank=True)
    from_email = models.CharField(_("from"), max_length=255)
    to = models.TextField(_("to"))
    subject = models.CharField(_("subject"), max_length=998)
    body_text = models.TextField(_("text body"), blank=True)
    body_html = models.TextField(_("HTML body"), blank=True)
    headers = models.JSONField(default=dict, blank=True)
    raw = models.TextField(blank=True)
    created_at = models.DateTimeField(_("received"), auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("mailbox message")
        verbose_name_plural = _("mailbox")

    def __str__(self):
        return self.subject


class MessageStatus(models.TextChoices):
    QUEUED = "queued", _("Queued")
    SENDING = "sending", _("Sending")
    SENT = "sent", _("Sent")
    SUPPRESSED = "suppressed", _("Suppressed")
    FAILED = "failed", _("Failed")
    HELD = "held", _("Held (campaign paused)")


class EmailMessage(models.Model):
    """The outbox and the mail log: every outbound message is a row before it is anything else.

    Written in the caller's transaction; workers claim rows (QUEUED → SENDING with a lease),
    re-check the gateway from fresh data and hand the message to SMTP. The row, not the broker,
    is the source of truth: a sweeper re-dispatches rows whose lease ran out.
    """

    person = models.ForeignKey("crm.Person", null=True, on_delete=models.SET_NULL,
                               related_name="email_messages")
    kind = models.CharField(max_length=16)
    template = models.CharField(max_length=64, blank=True)
    campaign_id = models.BigIntegerField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=200)
    message_id = models.CharField(max_length=255)
    in_reply_to = models.CharField(max_length=255, blank=True)
    to_address = models.CharField(max_length=254, blank=True)
    subject = models.CharField(max_length=998, blank=True)
    body_text = models.TextField(blank=True)
    body_html = models.TextField(blank=True)
    headers = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=12, choices=MessageStatus.choices,
                              default=MessageStatus.QUEUED)
    reason = models.CharField(max_length=64, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    lease_until = models.DateTimeField(null=True, blank=True)
    allowed_by = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        # Newest first by id, which grows with creation: the primary key's index serves the mail
        # log, and created_at needs none of its own.
        ordering = ["-id"]
        # Every message is updated as it is claimed and marked, and each index is written
        # again: only what a query uses. Uniqueness as constraints, not `unique=True`, which on
        # PostgreSQL adds a second (LIKE) index per column that no query here needs.
        # A campaign's progress and "anything left to send?" read (campaign, status).
        indexes = [models.Index(fields=["status", "lease_until"], name="outbox_status_lease"),
                   models.Index(fields=["campaign_id", "status"], name="outbox_campaign_status")]
        constraints = [
            models.UniqueConstraint(fields=["idempotency_key"], name="outbox_idempotency_key"),
            models.UniqueConstraint(fields=["message_id"], name="outbox_message_id"),
        ]
        verbose_name = _("email message")

    def __str__(self):
        return f"{self.kind}:{self.status}"


class InboundMessage(models.Model):
    """A message the contact sent us (recorded by staff or the API): replying to it is allowed
    even when they opted out, because it continues a conversation they started."""

    person = models.ForeignKey("crm.Person", on_delete=models.CASCADE,
                               related_name="inbound_messages")
    message_id = models.CharField(max_length=255, unique=True)
    subject = models.CharField(max_length=998, blank=True)
    body_text = models.TextField(blank=True)
    received_at = models.DateTimeField()
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True,
                                    on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-received_at"]

    def __str__(self):
        return self.subject


class DoubleOptInRequest(models.Model):
    """One emailed confirmation link. Only a hash of its token is stored; it is single-use and
    expires. Confirming it is the contact's proof of a double opt-in."""

    person = models.ForeignKey("crm.Person", on_delete=models.CASCADE,
                               related_name="double_opt_in_requests")
    token_hash = models.CharField(max_length=64, unique=True)
    message = models.ForeignKey(EmailMessage, null=True, on_delete=models.SET_NULL,
                                related_name="+")
    source = models.CharField(max_length=16)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    confirmed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"double opt-in {self.pk}"


class WebForm(models.Model):
    """A public sign-up form: which fields it asks, the marketing box, the consents it offers."""

    slug = models.SlugField(_("slug"), unique=True)
    name = models.CharField(_("name"), max_length=150)
    kind = models.CharField(_("creates"), max_length=10, default="lead",
                            choices=[("lead", _("Leads")), ("contact", _("Contacts"))])
    fields = models.JSONField(
        _("fields"), default=list, blank=True,
        help_text=_("Person field keys to ask besides email, e.g. [\"first_name\", \"company\"]."))
    marketing_label = models.CharField(
        _("marketing checkbox text"), max_length=300,
        default="Send me news and offers by email (you can unsubscribe at any time).")
    consent_purposes = models.ManyToManyField("consents.ConsentPurpose", blank=True,
                                              related_name="web_forms")
    thank_you_text = models.TextField(_("thank-you text"), default="Thank you!")
    autoresponder = models.BooleanField(_("send an acknowledgement email"), default=False)
    active = models.BooleanField(_("active"), default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("web form")

    def __str__(self):
        return self.name


class DoubleOptInBatch(models.Model):
    """Sending the double opt-in request to a whole marketing list, in the background."""

    marketing_list = models.ForeignKey("crm.MarketingList", on_delete=models.CASCADE,
                                       related_name="+")
    started_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True,
                                   on_delete=models.SET_NULL, related_name="+")
    counts = models.JSONField(_("counts by reason"), default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("double opt-in batch")
        verbose_name_plural = _("double opt-in batches")

    def __str__(self):
        return f"double opt-in to {self.marketing_list}"


class CampaignStatus(models.TextChoices):
    DRAFT = "draft", _("Draft")
    SCHEDULED = "scheduled", _("Scheduled")
    SENDING = "sending", _("Sending")
    PAUSED = "paused", _("Paused")
    CANCELLED = "cancelled", _("Cancelled")
    SENT = "sent", _("Sent")


class Campaign(models.Model):
    """A marketing email to an audience: the union of `lists`, narrowed by `segment_rule` when
    both are given (only the rule when no list is chosen).

    Its bodies are templates with merge fields (`{{ first_name }}`, see campaigns.campaign_mail);
    each message is rendered for its person at hand-off, after the gateway re-check.
    """

    name = models.CharField(_("name"), max_length=200)
    subject = models.CharField(_("subject"), max_length=998)
    body_html = models.TextField(_("HTML body"))
    body_text = models.TextField(_("text body"))
    lists = models.ManyToManyField("crm.MarketingList", blank=True, related_name="campaigns",
                                   verbose_name=_("marketing lists"))
    segment_rule = models.JSONField(_("segment rule"), null=True, blank=True)
    status = models.CharField(_("status"), max_length=12, choices=CampaignStatus.choices,
                              default=CampaignStatus.DRAFT)
    scheduled_at = models.DateTimeField(_("send at"), null=True, blank=True)
    # The audience as the gateway counted it when the campaign was materialised (reason →
    # people), so the stats can show who was left out before sending and why.
    audience_counts = models.JSONField(default=dict, blank=True)
    materialised = models.PositiveIntegerField(default=0)
    materialised_at = models.DateTimeField(null=True, blank=True)
    fanned_out_at = models.DateTimeField(null=True, blank=True)  # every outbox row created
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("campaign")
        indexes = [models.Index(fields=["status", "scheduled_at"], name="campaign_due")]

    def __str__(self):
        return self.name


class TrackingEvent(models.Model):
    """An open or a click, recorded only while the person's engagement-tracking consent
    allows it, and deleted when they revoke it (consent setting, on by default) or are erased."""

    class Kind(models.TextChoices):
        OPEN = "open", _("Opened")
        CLICK = "click", _("Clicked")

    person = models.ForeignKey("crm.Person", on_delete=models.CASCADE,
                               related_name="tracking_events")
    message = models.ForeignKey(EmailMessage, on_delete=models.CASCADE, related_name="+")
    campaign = models.ForeignKey(Campaign, null=True, blank=True, on_delete=models.CASCADE,
                                 related_name="tracking_events")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    url = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["campaign", "kind"], name="tracking_campaign_kind")]
        verbose_name = _("tracking event")

    def __str__(self):
        return f"{self.kind}:{self.message_id}"


class AudienceChunk(models.Model):
    """A campaign's audience, fixed when it starts: the eligible people's ids in order, packed
    16 bytes each (a UUID's bytes), up to AUDIENCE_CHUNK of them per row; `seq` numbers the
    chunks from 0. The (campaign, seq) key makes materialising idempotent: a second run fails
    on chunk 0.

    Packed on purpose: a million-person audience is ~180 rows written by one statement, not a
    million rows with a million index entries (a row per person cost twice the plain `INSERT …
    SELECT` of the same ids; bench/campaign.py). Outbox rows are created from it one chunk at a
    time as the campaign is fanned out to the workers (campaigns.campaign_send.fan_out).
    """

    pk = models.CompositePrimaryKey("campaign_id", "seq")
    # No database constraint: a deleted campaign takes its chunks along (Django's cascade); a
    # deleted person's id is skipped when outbox rows are created (they are joined to the people).
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, db_constraint=False,
                                 db_index=False, related_name="audience_chunks")
    seq = models.PositiveIntegerField()
    person_ids = models.BinaryField()

    class Meta:
        verbose_name = _("campaign audience chunk")

    def __str__(self):
        return f"{self.campaign_id}:{self.seq}"

    def people(self) -> list[uuid.UUID]:
        ids = bytes(self.person_ids)
        return [uuid.UUID(bytes=ids[i:i + 16]) for i in range(0, len(ids), 16)]
