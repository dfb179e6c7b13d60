"""Person filters by a segment or a rule, registered in crm.extensions.person_filters (apps.py).

crm selects people for lists and /api/persons/ without importing consents; these two filters
let it select by the rule language, which only consents compiles. Each is
fn(queryset, raw value) -> queryset and raises ValidationError({name: [...]}) on bad input. The
raw value is a query-string text or, from a JSON body, already parsed.
"""

import json

from django.core.exceptions import ValidationError

from . import rules
from .models import Segment


def segment_filter(queryset, value):
    """People matching the saved segment whose id is `value`."""
    try:
        segment = Segment.objects.get(pk=int(value))
    except (Segment.DoesNotExist, TypeError, ValueError, OverflowError):
        raise ValidationError({"segment": ["Unknown segment."]}) from None
    try:
        return queryset.filter(rules.to_q(segment.rule))
    except rules.RuleError as error:  # saved before a field or purpose it names was removed
        raise ValidationError({"segment": error.messages}) from None


def rule_filter(queryset, value):
    """People matching a rule: a JSON object, or its text from a query string."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValidationError({"rule": ["The rule is not valid JSON."]}) from None
    try:
        return queryset.filter(rules.to_q(value))
    except rules.RuleError as error:
        raise ValidationError({"rule": error.messages}) from None
