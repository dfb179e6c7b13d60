"""The rule language: one JSON form, validated once, compiled two ways that must agree.

    {"all": [rule, ...]}  {"any": [rule, ...]}  {"not": rule}
    {"field": key, "op": eq|ne|in|not_in|contains|empty|gt|lt, "value": v}
    {"consent": purpose_key, "state": unknown|pending|granted|revoked}
    {"opt_in": [state, ...]}

`to_q(rule)` gives a Django Q for bulk selection (segments, list filters, audiences);
`to_predicate(rule)` gives a function of one Person (portal access, visibility, workflows).
Semantics, the same in both:
- a missing custom value equals nothing, contains nothing, is neither greater nor less than
  anything, and is `empty`; `ne` and `not_in` are the negations of `eq` and `in`;
- `contains` is case-insensitive for ASCII letters only (so SQL and Python agree on all text);
- `gt`/`lt` apply to number and date fields only (text order depends on a collation);
- sensitive (encrypted) fields support `empty` only: their values are never compared.
"""

from collections.abc import Callable
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db.models import Exists, F, Func, OuterRef, Q, TextField, Value
from django.db.models.fields.json import KeyTextTransform
from django.db.models.lookups import Contains

from crm.models import EmailOptIn, FieldDefinition, FieldType, Person
from crm.registry import ENCRYPTED_CORE, is_sealed

OPS = ("eq", "ne", "in", "not_in", "contains", "empty", "gt", "lt")
CONSENT_STATES = ("unknown", "pending", "granted", "revoked")
# Core columns a rule may name, with the type their values compare as.
CORE_TYPES = {
    "kind": FieldType.CHOICE, "first_name": FieldType.TEXT, "last_name": FieldType.TEXT,
    "email": FieldType.TEXT, "phone": FieldType.TEXT, "company": FieldType.TEXT,
    "country": FieldType.TEXT, "region": FieldType.CHOICE, "stage": FieldType.CHOICE,
    "language": FieldType.CHOICE,
}
MAX_DEPTH = 12
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOWER = "abcdefghijklmnopqrstuvwxyz"
_ASCII_LOWER = str.maketrans(_UPPER, _LOWER)


class RuleError(ValidationError):
    """A rule that does not fit the language; the message says where and why."""


@dataclass(frozen=True)
class FieldSpec:
    key: str
    field_type: str
    custom: bool
    encrypted: bool


def _fields() -> dict[str, FieldSpec]:
    specs = {k: FieldSpec(k, t, False, False) for k, t in CORE_TYPES.items()}
    specs.update({k: FieldSpec(k, FieldType.TEXT, False, True) for k in ENCRYPTED_CORE})
    for d in FieldDefinition.objects.filter(is_core=False):
        specs[d.key] = FieldSpec(d.key, d.field_type, True, d.is_encrypted)
    return specs


def _purposes() -> dict[str, int]:
    """Purpose key → id: rules name purposes by key, the SQL filters consents by id."""
    from .models import ConsentPurpose

    return dict(ConsentPurpose.objects.values_list("key", "id"))


# -- validation ----------------------------------------------------------------------------------

def _value_ok(spec: FieldSpec, value) -> bool:
    if spec.field_type == FieldType.NUMBER:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if spec.field_type == FieldType.BOOLEAN:
        return isinstance(value, bool)
    return isinstance(value, str)


def validate(rule, *, fields: dict | None = None, purposes=None) -> None:
    """Raise RuleError with a path to the first problem (e.g. `all[1].value`)."""
    fields = _fields() if fields is None else fields
    purposes = _purposes() if purposes is None else purposes
    _validate(rule, fields, purposes, "rule", 0)


def _validate(rule, fields, purposes, path, depth):  # noqa: C901 - one branch per form
    def fail(message):
        raise RuleError(f"{path}: {message}")

    if depth > MAX_DEPTH:
        fail("nested too deeply")
    if not isinstance(rule, dict) or len(rule) == 0:
        fail("a rule is a JSON object")
    keys = set(rule)
    if keys in ({"all"}, {"any"}):
        (name,) = keys
        parts = rule[name]
        if not isinstance(parts, list) or not parts:
            fail(f"'{name}' takes a non-empty list of rules")
        for i, part in enumerate(parts):
            _validate(part, fields, purposes, f"{path}.{name}[{i}]", depth + 1)
    elif keys == {"not"}:
        _validate(rule["not"], fields, purposes, f"{path}.not", depth + 1)
    elif keys == {"opt_in"}:
        states = rule["opt_in"]
        if not isinstance(states, list) or not states or any(
            s not in EmailOptIn.values for s in states
        ):
            fail(f"'opt_in' takes a list of: {', '.join(EmailOptIn.values)}")
    elif keys == {"consent", "state"}:
        if rule["consent"] not in purposes:
            fail(f"unknown consent purpose {rule['consent']!r}")
        if rule["state"] not in CONSENT_STATES:
            fail(f"'state' is one of: {', '.join(CONSENT_STATES)}")
    elif "field" in keys and "op" in keys and keys <= {"field", "op", "value"}:
        spec = fields.get(rule["field"])
        if spec is None:
            fail(f"unknown field {rule['field']!r}")
        op = rule["op"]
        if op not in OPS:
            fail(f"'op' is one of: {', '.join(OPS)}")
        if op == "empty":
            if "value" in rule:
                fail("'empty' takes no value")
            return
        if "value" not in rule:
            fail(f"'{op}' needs a value")
        if spec.encrypted:
            fail(f"{spec.key} is encrypted: only 'empty' applies")
        value = rule["value"]
        if op in ("in", "not_in"):
            if not isinstance(value, list) or not value or not all(
                _value_ok(spec, v) for v in value
            ):
                fail(f"'{op}' takes a non-empty list of {spec.field_type} values")
        elif op in ("gt", "lt"):
            if spec.field_type not in (FieldType.NUMBER, FieldType.DATE):
                fail(f"'{op}' applies to number and date fields only")
            if not _value_ok(spec, value):
                fail(f"{spec.key} compares with a {spec.field_type} value")
        elif op == "contains":
            if spec.field_type != FieldType.TEXT or not isinstance(value, str) or not value:
                fail("'contains' takes non-empty text and applies to text fields")
        elif not _value_ok(spec, value):
            fail(f"{spec.key} compares with a {spec.field_type} value")
    else:
        fail("expected one of all, any, not, field/op/value, consent/state, opt_in")


# -- compiling to Q ------------------------------------------------------------------------------

class _AsciiLower(Func):
    function = "TRANSLATE"
    output_field = TextField()

    def __init__(self, expression):
        super().__init__(expression, Value(_UPPER), Value(_LOWER))


def _column(spec: FieldSpec):
    if spec.custom:
        return F(f"custom__{spec.key}")
    return F(spec.key)


def _field_q(rule, spec: FieldSpec) -> Q:
    op, value = rule["op"], rule.get("value")
    if op == "ne":
        return ~_field_q({**rule, "op": "eq"}, spec)
    if op == "not_in":
        return ~_field_q({**rule, "op": "in"}, spec)
    if spec.custom:
        present = Q(custom__has_key=spec.key)
        if op == "empty":
            return ~present
        lookup = f"custom__{spec.key}"
        if op == "eq":
            return present & Q(**{lookup: value})
        if op == "in":
            return present & Q(**{f"{lookup}__in": value})
        if op in ("gt", "lt"):
            # Stored numbers and ISO dates compare in jsonb as numbers and as strings.
            return present & Q(**{f"{lookup}__{op}": value})
        text = KeyTextTransform(spec.key, "custom")
        return present & Q(Contains(_AsciiLower(text), value.translate(_ASCII_LOWER)))
    if spec.encrypted:  # only `empty` validates
        return Q(**{f"{spec.key}__isnull": True})
    if op == "empty":
        return Q(**{spec.key: ""})
    if op == "eq":
        return Q(**{spec.key: value})
    if op == "in":
        return Q(**{f"{spec.key}__in": value})
    return Q(Contains(_AsciiLower(F(spec.key)), value.translate(_ASCII_LOWER)))


def _consent_q(rule, purposes: dict) -> Q:
    from .models import Consent

    # By purpose id, not through a join on the key: the subquery then probes the
    # (purpose, state, person) index and reads people in id order.
    consents = Consent.objects.filter(person=OuterRef("pk"), purpose_id=purposes[rule["consent"]])
    if rule["state"] == "unknown":
        # No row, or a row still at unknown.
        return ~Q(Exists(consents.exclude(state="unknown")))
    return Q(Exists(consents.filter(state=rule["state"])))


def _to_q(rule, fields, purposes) -> Q:
    if "all" in rule:
        q = Q()
        for part in rule["all"]:
            q &= _to_q(part, fields, purposes)
        return q
    if "any" in rule:
        q = Q(pk__in=[])
        for part in rule["any"]:
            q |= _to_q(part, fields, purposes)
        return q
    if "not" in rule:
        return ~_to_q(rule["not"], fields, purposes)
    if "opt_in" in rule:
        return Q(email_opt_in__in=rule["opt_in"])
    if "consent" in rule:
        return _consent_q(rule, purposes)
    return _field_q(rule, fields[rule["field"]])


def to_q(rule, *, fields: dict | None = None) -> Q:
    fields = _fields() if fields is None else fields
    purposes = _purposes()
    validate(rule, fields=fields, purposes=purposes)
    return _to_q(rule, fields, purposes)


# -- compiling to a predicate --------------------------------------------------------------------

def _value_of(person: Person, spec: FieldSpec):
    if spec.custom:
        return (person.custom or {}).get(spec.key)
    return getattr(person, spec.key)


def _field_pred(rule, spec: FieldSpec) -> Callable[[Person, dict], bool]:
    op, value = rule["op"], rule.get("value")
    if op in ("ne", "not_in"):
        inner = _field_pred({**rule, "op": {"ne": "eq", "not_in": "in"}[op]}, spec)
        return lambda p, c: not inner(p, c)
    if op == "empty":
        if spec.custom:
            return lambda p, c: spec.key not in (p.custom or {})
        return lambda p, c: not _value_of(p, spec)

    def compare(person, consents):
        current = _value_of(person, spec)
        if current is None or is_sealed(current):
            return False
        if op == "eq":
            return _same(current, value)
        if op == "in":
            return any(_same(current, v) for v in value)
        if op == "contains":
            return isinstance(current, str) and value.translate(_ASCII_LOWER) in current.translate(
                _ASCII_LOWER)
        if isinstance(current, bool) or not isinstance(current, type(value) if isinstance(
                value, str) else int | float):
            return False
        return current > value if op == "gt" else current < value

    return compare


def _same(a, b) -> bool:
    # JSON semantics: true is not 1, and 1 equals 1.0.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


def _to_pred(rule, fields):
    if "all" in rule:
        parts = [_to_pred(r, fields) for r in rule["all"]]
        return lambda p, c: all(f(p, c) for f in parts)
    if "any" in rule:
        parts = [_to_pred(r, fields) for r in rule["any"]]
        return lambda p, c: any(f(p, c) for f in parts)
    if "not" in rule:
        inner = _to_pred(rule["not"], fields)
        return lambda p, c: not inner(p, c)
    if "opt_in" in rule:
        states = set(rule["opt_in"])
        return lambda p, c: p.email_opt_in in states
    if "consent" in rule:
        key, state = rule["consent"], rule["state"]
        return lambda p, c: c.get(key, "unknown") == state
    return _field_pred(rule, fields[rule["field"]])


def to_predicate(rule, *, fields: dict | None = None) -> Callable[..., bool]:
    """Return `matches(person, consents=None)`; `consents` maps purpose key → state and is
    loaded from the database (one query) when not given."""
    fields = _fields() if fields is None else fields
    validate(rule, fields=fields)
    pred = _to_pred(rule, fields)

    def matches(person: Person, consents: dict | None = None) -> bool:
        if consents is None and _uses_consent(rule):
            from .selectors import consent_states

            consents = consent_states(person)
        return pred(person, consents or {})

    return matches


def _uses_consent(rule) -> bool:
    if "consent" in rule:
        return True
    parts = rule.get("all") or rule.get("any") or ([rule["not"]] if "not" in rule else [])
    return any(_uses_consent(p) for p in parts)


# -- a readable summary --------------------------------------------------------------------------

_OP_WORDS = {"eq": "is", "ne": "is not", "in": "is one of", "not_in": "is none of",
             "contains": "contains", "gt": "is after/above", "lt": "is before/below"}


def describe(rule) -> str:
    """Plain-English summary of a (valid) rule, for settings pages."""
    if not rule:
        return "everyone"
    if "all" in rule:
        return " and ".join(_wrap(describe(r)) for r in rule["all"])
    if "any" in rule:
        return " or ".join(_wrap(describe(r)) for r in rule["any"])
    if "not" in rule:
        return f"not {_wrap(describe(rule['not']))}"
    if "opt_in" in rule:
        return f"email opt-in is one of {', '.join(rule['opt_in'])}"
    if "consent" in rule:
        return f"consent '{rule['consent']}' is {rule['state']}"
    if rule.get("op") == "empty":
        return f"{rule['field']} is empty"
    value = rule.get("value")
    shown = ", ".join(map(repr, value)) if isinstance(value, list) else repr(value)
    return f"{rule['field']} {_OP_WORDS.get(rule.get('op'), rule.get('op'))} {shown}"


def _wrap(text: str) -> str:
    return f"({text})" if " and " in text or " or " in text else text
