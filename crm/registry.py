"""The field registry: which person fields exist and how a custom field's value is validated.

Every write path (staff UI, API, import, web forms) reaches `clean_custom` through the person
service, so a custom value is checked by its type exactly once, here.
"""

import datetime
import math
from decimal import Decimal, InvalidOperation

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

from encryption.masking import DEFAULT_RULE, MASK_CHAR, mask

from .models import FieldDefinition, FieldType, Person

# Core fields a person form and the API may write. Rights and opt-in state are written by the
# services that own them, never by a general edit.
CORE_EDITABLE = (
    "first_name", "last_name", "email", "phone", "company", "organisation",
    "country", "region", "stage", "owner", "language", "national_id", "card_number",
)
# Core fields sealed at rest (EncryptedField on Person); their masks are what everyone sees.
ENCRYPTED_CORE = ("national_id", "card_number")
SEALED = "$sealed"


def is_sealed(value) -> bool:
    return isinstance(value, dict) and SEALED in value


def custom_context(key: str) -> str:
    return f"crm.person.custom.{key}"


def custom_text(value) -> str:
    """A custom value as the text that is sealed, masked and revealed."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def encrypted_custom_rules() -> dict[str, str]:
    """{key: mask rule} of every encrypted custom field, active or not (one query)."""
    return {key: rule or DEFAULT_RULE for key, rule in FieldDefinition.objects.filter(
        is_encrypted=True, is_core=False).values_list("key", "mask_rule")}


def display_custom(custom: dict, encrypted: dict | None = None) -> dict:
    """Custom values as anyone may see them: sealed ones replaced by their mask. A value of an
    encrypted field not sealed yet — stored before its field was switched to encrypted, while
    the background job gets to it — is masked here by its field's rule, so no one sees it in
    full meanwhile. `encrypted` is `encrypted_custom_rules()`, which a caller showing many
    people loads once; None loads it."""
    if not custom:
        return {}
    if encrypted is None:
        encrypted = encrypted_custom_rules()
    shown = {}
    for key, value in custom.items():
        if is_sealed(value):
            shown[key] = value.get("mask", "")
        elif key in encrypted and value not in (None, ""):
            shown[key] = mask(custom_text(value), encrypted[key])
        else:
            shown[key] = value
    return shown

TEXT_MAX_LENGTH = 1000
# A client that reads a person and writes it back must not store the mask as the new value.
MASK_ECHO_MESSAGE = "This is the masked value; send the full value, or leave the field out."
_TRUE = {"true", "yes", "1", "on", "y", "si", "sì"}
_FALSE = {"false", "no", "0", "off", "n"}


def custom_definitions() -> list[FieldDefinition]:
    return list(FieldDefinition.objects.filter(is_core=False, active=True))


def core_field_names() -> set[str]:
    return {f.name for f in Person._meta.get_fields()}


def _is_empty(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def clean_custom_value(definition: FieldDefinition, value):
    """Return the JSON value to store for `value`, or raise ValidationError with a clear message."""
    kind = definition.field_type
    if kind == FieldType.TEXT:
        if not isinstance(value, str):
            raise ValidationError(_("Enter text."))
        value = value.strip()
        if len(value) > TEXT_MAX_LENGTH:
            raise ValidationError(
                _("Enter at most %(n)d characters.") % {"n": TEXT_MAX_LENGTH}
            )
        return value
    if kind == FieldType.NUMBER:
        if isinstance(value, bool):
            raise ValidationError(_("Enter a number."))
        try:
            number = Decimal(str(value).strip())
        except (InvalidOperation, ValueError):
            raise ValidationError(_("Enter a number.")) from None
        if not number.is_finite() or abs(number) > Decimal("1e15"):
            raise ValidationError(_("Enter a finite number below 10^15."))
        if number == number.to_integral_value():
            return int(number)
        as_float = float(number)
        if math.isinf(as_float):
            raise ValidationError(_("Enter a number."))
        return as_float
    if kind == FieldType.DATE:
        if isinstance(value, datetime.datetime):
            return value.date().isoformat()
        if isinstance(value, datetime.date):
            return value.isoformat()
        if isinstance(value, str):
            try:
                return datetime.date.fromisoformat(value.strip()).isoformat()
            except ValueError:
                pass
        raise ValidationError(_("Enter a date as YYYY-MM-DD."))
    if kind == FieldType.CHOICE:
        if not isinstance(value, str) or value.strip() not in definition.choices:
            raise ValidationError(
                _("Choose one of: %(choices)s.") % {"choices": ", ".join(definition.choices)}
            )
        return value.strip()
    if kind == FieldType.BOOLEAN:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValidationError(_("Enter true or false."))
    raise ValidationError(_("Unknown field type."))


def clean_custom(
    values, *, current: dict, definitions: list[FieldDefinition], creating: bool
) -> dict:
    """Merge `values` into `current` and return the new custom dict.

    Keys given with an empty value are removed. Unknown keys are refused, so a typo in an API
    client or an import mapping is reported instead of silently stored. Required fields are
    demanded on create only, so adding a required field later does not block every edit of
    older records. Errors are keyed `custom.<key>`.
    """
    if not isinstance(values, dict):
        raise ValidationError({"custom": [_("Expected an object of field keys to values.")]})
    by_key = {d.key: d for d in definitions}
    result = dict(current)
    errors = {}
    for key, value in values.items():
        definition = by_key.get(key)
        if definition is None:
            errors[f"custom.{key}"] = [_("Unknown custom field.")]
            continue
        if _is_empty(value):
            if definition.required:
                errors[f"custom.{key}"] = [_("This field is required.")]
            result.pop(key, None)
            continue
        if definition.is_encrypted and MASK_CHAR in str(value):
            errors[f"custom.{key}"] = [MASK_ECHO_MESSAGE]
            continue
        try:
            result[key] = clean_custom_value(definition, value)
        except ValidationError as error:
            errors[f"custom.{key}"] = error.messages
    for definition in definitions if creating else ():
        if definition.required and _is_empty(result.get(definition.key)):
            errors.setdefault(f"custom.{definition.key}", [_("This field is required.")])
    if errors:
        raise ValidationError(errors)
    return result
