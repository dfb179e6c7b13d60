"""Staff UI for email: the outbox's mail log (read-only) and the development mailbox."""

from django.conf import settings
from django.contrib import admin
from django.utils.html import format_html, urlize
from django.utils.safestring import mark_safe
from django.utils.translation import gettext_lazy as _

from config.readonly_admin import ReadOnlyAdminMixin

from .models import EmailMessage, MailboxMessage


class _BodiesMixin:
    """Show a stored message's text and HTML bodies safely."""

    @admin.display(description=_("text"))
    def text(self, obj):
        # Links stay clickable so a newcomer can follow an email's link from here.
        # urlize(autoescape=True) escapes everything that is not a link it builds.
        linked = mark_safe(urlize(obj.body_text, autoescape=True))  # noqa: S308
        return format_html('<pre style="white-space:pre-wrap">{}</pre>', linked)

    @admin.display(description=_("HTML"))
    def html(self, obj):
        if not obj.body_html:
            return "—"
        # Rendered in a sandboxed frame: no scripts, no access to the staff session.
        return format_html(
            '<iframe sandbox="allow-popups allow-popups-to-escape-sandbox" srcdoc="{}" '
            'style="width:100%;height:480px;border:1px solid #ccc;background:#fff"></iframe>',
            obj.body_html,
        )


@admin.register(EmailMessage)
class EmailMessageAdmin(ReadOnlyAdminMixin, _BodiesMixin, admin.ModelAdmin):
    """The mail log: every message the outbox sent, suppressed (and why) or gave up on."""

    list_display = ("created_at", "kind", "status", "reason", "template", "to_address",
                    "attempts", "sent_at")
    list_filter = ("status", "kind")
    search_fields = ("=message_id", "=idempotency_key", "=to_address")
    # No date_hierarchy: its date queries would scan the whole log (created_at has no index,
    # which every message's writes would have to keep up); newest first by id is the order.
    show_full_result_count = False  # the log grows large; an exact count per page is a scan
    fields = ("created_at", "kind", "template", "campaign_id", "person", "to_address", "status",
              "reason", "attempts", "sent_at", "allowed_by", "message_id", "in_reply_to",
              "idempotency_key", "headers", "subject", "text", "html")
    readonly_fields = fields


@admin.register(MailboxMessage)
class MailboxAdmin(_BodiesMixin, admin.ModelAdmin):
    list_display = ("created_at", "to", "subject", "from_email")
    list_display_links = ("created_at", "subject")
    search_fields = ("to", "subject")
    date_hierarchy = "created_at"
    fields = ("created_at", "from_email", "to", "subject", "message_id", "text", "html")
    readonly_fields = fields

    def has_module_permission(self, request):
        # Only meaningful while the local backend keeps the mail (no EMAIL_URL configured).
        return settings.MAILBOX_ENABLED and super().has_module_permission(request)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


from .admin_campaigns import CampaignAdmin  # noqa: E402, F401  (registers the campaign pages)
from .admin_webforms import WebFormAdmin  # noqa: E402, F401  (registers the web-form page)
