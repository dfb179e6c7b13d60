"""Email: for now the local mailbox that keeps every message in development."""

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
