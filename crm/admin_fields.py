"""Settings: the field registry — custom fields, and each field's sensitivity (PII, encryption
and its one-way switch, mask rule, who may reveal)."""

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from . import field_encryption, services
from .models import FieldDefinition


class FieldDefinitionForm(forms.ModelForm):
    confirm_encryption = forms.BooleanField(
        required=False, label=_("I understand encryption cannot be switched off"),
        help_text=_("Existing values are encrypted in the background; afterwards staff see "
                    "only the mask and revealing a value is logged."),
    )

    class Meta:
        model = FieldDefinition
        fields = ["key", "label", "field_type", "choices", "required", "help_text", "position",
                  "active", "is_pii", "is_encrypted", "mask_rule", "reveal_groups"]

    def clean(self):
        cleaned = super().clean()
        was_encrypted = bool(self.instance.pk) and FieldDefinition.objects.filter(
            pk=self.instance.pk, is_encrypted=True).exists()
        if cleaned.get("is_encrypted") and not was_encrypted and not cleaned.get(
            "confirm_encryption"
        ):
            self.add_error("confirm_encryption",
                           _("Confirm: once on, encryption cannot be switched off."))
        return cleaned

    def _post_clean(self):
        super()._post_clean()
        try:
            services.field_definition_clean(definition=self.instance)
        except ValidationError as error:
            self._update_errors(error)


@admin.register(FieldDefinition)
class FieldDefinitionAdmin(admin.ModelAdmin):
    """Settings: admins define custom fields and each field's sensitivity."""

    form = FieldDefinitionForm
    list_display = ("label", "key", "field_type", "is_core", "is_pii", "is_encrypted", "active",
                    "position")
    list_filter = ("is_core", "field_type", "is_pii", "is_encrypted", "active")
    search_fields = ("key", "label")
    filter_horizontal = ("reveal_groups",)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ("is_core",)
        fixed = ["is_core", "key", "encryption_progress"]
        if obj.is_core:
            # A core field's type and mask rule are its column's (crm.models.Person).
            fixed += ["field_type", "mask_rule"]
        return fixed

    @admin.display(description=_("encryption progress"))
    def encryption_progress(self, obj):
        if not obj.is_encrypted:
            return "—"
        if obj.is_core:
            return _("Always encrypted.")
        done, total = field_encryption.encryption_progress(obj)
        return _("%(done)d of %(total)d stored values encrypted") % {"done": done, "total": total}

    def save_model(self, request, obj, form, change):
        services.field_definition_save(definition=obj)

    def has_delete_permission(self, request, obj=None):
        return False
