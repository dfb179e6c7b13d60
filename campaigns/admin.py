"""Staff UI for email. For now: the development mailbox, listing what the local backend kept."""

from django.conf import settings
from django.contrib import admin
from django.utils.html import format_html, urlize
from django.utils.safestring import mark_safe
from django.utils.translation import gettext_lazy as _

from .models import MailboxMessage


@admin.register(MailboxMessage)
class MailboxAdmin(admin.ModelAdmin):
    list_display = ("created_at", "to", "subject", "from_email")
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
