"""Settings: web forms, with the snippet to embed on another site."""

from django.contrib import admin
from django.core.exceptions import ValidationError
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from config.readonly_admin import ReadOnlyAdminMixin

from .api import embed_snippet
from .models import DoubleOptInBatch, WebForm
from .webforms import webform_clean


@admin.register(WebForm)
class WebFormAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "kind", "active", "created_at")
    filter_horizontal = ("consent_purposes",)
    readonly_fields = ("snippet",)

    @admin.display(description=_("embed this HTML"))
    def snippet(self, obj):
        if not obj.pk:
            return "—"
        return format_html('<textarea readonly rows="10" cols="90" style="font-family:monospace">'
                           "{}</textarea>", embed_snippet(obj))

    def save_model(self, request, obj, form, change):
        from .webforms import webform_save

        webform_save(form=obj)

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)

        class Checked(form):
            def clean(self):
                cleaned = super().clean()
                self.instance.fields = cleaned.get("fields", [])
                try:
                    webform_clean(self.instance)
                except ValidationError as error:
                    self.add_error("fields", error.messages)
                return cleaned

        return Checked


@admin.register(DoubleOptInBatch)
class DoubleOptInBatchAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("marketing_list", "started_by", "created_at", "finished_at", "counts")
