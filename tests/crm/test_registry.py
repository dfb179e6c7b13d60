import datetime

import pytest
from django.core.exceptions import ValidationError

from crm.models import FieldDefinition, FieldType
from crm.registry import clean_custom, clean_custom_value


def definition(field_type, **kwargs):
    return FieldDefinition(key="f", label="F", field_type=field_type, **kwargs)


@pytest.mark.parametrize(
    ("field_type", "value", "stored"),
    [
        (FieldType.TEXT, "  hello ", "hello"),
        (FieldType.NUMBER, 42, 42),
        (FieldType.NUMBER, "42", 42),
        (FieldType.NUMBER, "3.5", 3.5),
        (FieldType.NUMBER, -0.25, -0.25),
        (FieldType.DATE, "2026-02-28", "2026-02-28"),
        (FieldType.DATE, datetime.date(2026, 1, 2), "2026-01-02"),
        (FieldType.BOOLEAN, True, True),
        (FieldType.BOOLEAN, "yes", True),
        (FieldType.BOOLEAN, "false", False),
    ],
)
def test_custom_value_of_each_type_is_stored_normalised(field_type, value, stored):
    assert clean_custom_value(definition(field_type), value) == stored


def test_choice_value_must_be_one_of_the_choices():
    field = definition(FieldType.CHOICE, choices=["gold", "silver"])
    assert clean_custom_value(field, "gold") == "gold"
    with pytest.raises(ValidationError, match="gold, silver"):
        clean_custom_value(field, "bronze")


@pytest.mark.parametrize(
    ("field_type", "value"),
    [
        (FieldType.TEXT, 12),
        (FieldType.TEXT, "x" * 1001),
        (FieldType.NUMBER, "twelve"),
        (FieldType.NUMBER, True),
        (FieldType.NUMBER, "NaN"),
        (FieldType.NUMBER, "Infinity"),
        (FieldType.NUMBER, "1e400"),
        (FieldType.NUMBER, [1]),
        (FieldType.DATE, "2026-02-30"),
        (FieldType.DATE, "28/02/2026"),
        (FieldType.DATE, 20260228),
        (FieldType.BOOLEAN, "maybe"),
        (FieldType.BOOLEAN, 2),
        (FieldType.CHOICE, 3),
    ],
)
def test_bad_custom_value_is_refused_with_a_message(field_type, value):
    field = definition(field_type, choices=["a"] if field_type == FieldType.CHOICE else [])
    with pytest.raises(ValidationError) as raised:
        clean_custom_value(field, value)
    assert raised.value.messages[0]


def test_unknown_custom_key_is_refused_and_keyed_by_name():
    with pytest.raises(ValidationError) as raised:
        clean_custom({"typo": "x"}, current={}, definitions=[], creating=True)
    assert "custom.typo" in raised.value.message_dict


def test_empty_value_removes_the_key_and_other_keys_are_kept():
    fields = [definition(FieldType.TEXT), FieldDefinition(key="g", label="G")]
    result = clean_custom({"f": ""}, current={"f": "old", "g": "kept"}, definitions=fields,
                          creating=False)
    assert result == {"g": "kept"}


def test_required_field_is_demanded_on_create_but_not_on_unrelated_edits():
    fields = [FieldDefinition(key="need", label="Need", required=True)]
    with pytest.raises(ValidationError) as raised:
        clean_custom({}, current={}, definitions=fields, creating=True)
    assert "custom.need" in raised.value.message_dict
    assert clean_custom({}, current={}, definitions=fields, creating=False) == {}


def test_custom_values_must_be_an_object():
    with pytest.raises(ValidationError):
        clean_custom(["a"], current={}, definitions=[], creating=True)
