"""The rule language: validation errors, and Q and predicate agreeing on generated cases."""

import datetime

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config import clock
from consents.models import Consent, ConsentPurpose, PurposeKind
from consents.rules import RuleError, to_predicate, to_q, validate
from crm import services
from crm.models import EmailOptIn, FieldType, Person
from tests.factories import FieldDefinitionFactory

pytestmark = pytest.mark.django_db

CUSTOM = {
    "note": FieldType.TEXT, "budget": FieldType.NUMBER, "since": FieldType.DATE,
    "tier": FieldType.CHOICE, "vip": FieldType.BOOLEAN,
}
TIERS = ["gold", "silver", "bronze"]
PURPOSES = ["news", "partners"]
# Text with ASCII and non-ASCII letters, SQL wildcards and case variants.
TEXT = st.text(alphabet="aAbBzZ%_\\éÉßİ ", max_size=6)


@pytest.fixture
def registry(db):
    for key, field_type in CUSTOM.items():
        FieldDefinitionFactory(key=key, field_type=field_type,
                               choices=TIERS if key == "tier" else [])
    for key in PURPOSES:
        ConsentPurpose.objects.create(key=key, name=key, kind=PurposeKind.CUSTOM)


def custom_values():
    return st.fixed_dictionaries({}, optional={
        "note": TEXT.filter(str.strip),
        "budget": st.one_of(st.integers(-5, 5), st.sampled_from([0.5, -1.5, 2.0])),
        "since": st.dates(datetime.date(2024, 1, 1), datetime.date(2024, 1, 9)).map(
            datetime.date.isoformat),
        "tier": st.sampled_from(TIERS),
        "vip": st.booleans(),
    })


people = st.lists(st.fixed_dictionaries({
    "first_name": TEXT, "company": TEXT,
    "stage": st.sampled_from(["new", "qualified", "customer"]),
    "region": st.sampled_from(["", "EU", "UK"]),
    "custom": custom_values(),
    "opt_in": st.sampled_from(EmailOptIn.values),
    "consents": st.fixed_dictionaries({}, optional={
        k: st.sampled_from(["unknown", "pending", "granted", "revoked"]) for k in PURPOSES}),
}), min_size=1, max_size=6)

value_for = {
    "first_name": TEXT, "company": TEXT, "stage": st.sampled_from(["new", "qualified", "lost"]),
    "region": st.sampled_from(["", "EU", "UK"]), "note": TEXT,
    "budget": st.one_of(st.integers(-5, 5), st.sampled_from([0.5, 2.0])),
    "since": st.sampled_from(["2024-01-01", "2024-01-05", "2024-01-09"]),
    "tier": st.sampled_from(TIERS + ["iron"]), "vip": st.booleans(),
}
ORDERED = {"budget", "since"}
TEXTUAL = {"first_name", "company", "note"}


@st.composite
def leaf(draw):
    kind = draw(st.sampled_from(["field", "field", "field", "opt_in", "consent"]))
    if kind == "opt_in":
        return {"opt_in": draw(st.lists(st.sampled_from(EmailOptIn.values), min_size=1,
                                        max_size=3))}
    if kind == "consent":
        return {"consent": draw(st.sampled_from(PURPOSES)),
                "state": draw(st.sampled_from(["unknown", "pending", "granted", "revoked"]))}
    field = draw(st.sampled_from(sorted(value_for)))
    ops = ["eq", "ne", "in", "not_in", "empty"]
    if field in ORDERED:
        ops += ["gt", "lt"]
    if field in TEXTUAL:
        ops += ["contains"]
    op = draw(st.sampled_from(ops))
    if op == "empty":
        return {"field": field, "op": op}
    if op in ("in", "not_in"):
        return {"field": field, "op": op,
                "value": draw(st.lists(value_for[field], min_size=1, max_size=3))}
    value = draw(value_for[field])
    if op == "contains":
        value = draw(TEXT.filter(bool))
    return {"field": field, "op": op, "value": value}


rules = st.recursive(
    leaf(),
    lambda inner: st.one_of(
        st.builds(lambda xs: {"all": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda xs: {"any": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda x: {"not": x}, inner),
    ),
    max_leaves=6,
)


def plant(population):
    purposes = {p.key: p for p in ConsentPurpose.objects.all()}
    planted = []
    for i, spec in enumerate(population):
        person = services.person_create(data={
            "first_name": spec["first_name"], "company": spec["company"], "stage": spec["stage"],
            "region": spec["region"], "custom": spec["custom"], "email": f"p{i}@example.org",
        }, source="system")
        # Opt-in transitions belong to the opt-in service (issue 5); here the state is planted.
        Person.objects.filter(pk=person.pk).update(email_opt_in=spec["opt_in"])
        for key, state in spec["consents"].items():
            Consent.objects.create(person=person, purpose=purposes[key], state=state,
                                   updated_at=clock.now())
        planted.append((Person.objects.get(pk=person.pk), spec["consents"]))
    return planted


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(population=people, rule=rules)
def test_q_and_predicate_agree_on_generated_people_and_rules(registry, population, rule):
    sid = transaction.savepoint()
    try:
        planted = plant(population)
        by_sql = set(Person.objects.filter(to_q(rule)).values_list("pk", flat=True))
        matches = to_predicate(rule)
        by_python = {p.pk for p, consents in planted if matches(p, consents)}
        assert by_sql == by_python, rule
    finally:
        transaction.savepoint_rollback(sid)


@pytest.mark.parametrize(
    ("rule", "where"),
    [
        ({}, "rule: a rule is a JSON object"),
        ({"all": []}, "non-empty list"),
        ({"any": [{"field": "nope", "op": "eq", "value": 1}]}, "rule.any[0]: unknown field"),
        ({"field": "stage", "op": "like", "value": "x"}, "'op' is one of"),
        ({"field": "stage", "op": "eq"}, "needs a value"),
        ({"field": "stage", "op": "empty", "value": 1}, "takes no value"),
        ({"field": "stage", "op": "gt", "value": "a"}, "number and date fields only"),
        ({"field": "budget", "op": "eq", "value": "5"}, "compares with a number"),
        ({"field": "vip", "op": "eq", "value": 1}, "compares with a boolean"),
        ({"field": "card_number", "op": "eq", "value": "4111"}, "encrypted"),
        ({"field": "note", "op": "contains", "value": ""}, "non-empty text"),
        ({"opt_in": ["maybe"]}, "'opt_in' takes a list"),
        ({"consent": "ghost", "state": "granted"}, "unknown consent purpose"),
        ({"consent": "news", "state": "yes"}, "'state' is one of"),
        ({"not": {"not": {"bogus": 1}}}, "rule.not.not: expected one of"),
    ],
)
def test_invalid_rules_are_refused_with_a_path(registry, rule, where):
    with pytest.raises(RuleError, match=where.replace("[", r"\[").replace("]", r"\]")):
        validate(rule)


def test_encrypted_field_supports_only_empty(registry):
    with_card = services.person_create(data={"card_number": "4111111111111111"}, source="api")
    services.person_create(data={"email": "x@example.org"}, source="api")
    rule = {"not": {"field": "card_number", "op": "empty"}}
    assert list(Person.objects.filter(to_q(rule))) == [with_card]
    assert to_predicate(rule)(Person.objects.get(pk=with_card.pk), {})
