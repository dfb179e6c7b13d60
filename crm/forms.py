"""Form fields for custom person fields, built from the registry (staff UI)."""

import datetime
from decimal import Decimal

from django import forms
from django.utils.translation import gettext_lazy as _

from .models import FieldDefinition, FieldType


def custom_form_field(definition: FieldDefinition, value) -> forms.Field:
    """A real form field for a custom field, pre-filled with the stored JSON `value`."""
    common = {
        "label": definition.label,
        "required": definition.required,
        "help_text": definition.help_text,
        "initial": value,
    }
    kind = definition.field_type
    if kind == FieldType.NUMBER:
        return forms.DecimalField(max_digits=30, decimal_places=10, **common)
    if kind == FieldType.DATE:
        common["initial"] = datetime.date.fromisoformat(value) if value else None
        return forms.DateField(widget=forms.DateInput(attrs={"type": "date"}), **common)
    if kind == FieldType.CHOICE:
        choices = [("", "—")] + [(c, c) for c in definition.choices]
        return forms.ChoiceField(choices=choices, **common)
    if kind == FieldType.BOOLEAN:
        common["initial"] = {True: "true", False: "false"}.get(value, "")
        return forms.ChoiceField(
            choices=[("", "—"), ("true", _("Yes")), ("false", _("No"))], **common
        )
    return forms.CharField(max_length=1000, **common)


def custom_value_for_service(value):
    """Turn a form's cleaned value into what the person service validates (JSON-like)."""
    if isinstance(value, Decimal):
        return str(value.normalize()) if value.is_finite() else str(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    return value
