import pytest
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import given, settings
from hypothesis import strategies as st

from config import clock
from crm import services
from crm.errors import FieldLocked, ProcessingStopped
from crm.models import AuditEntry, FieldDefinition, FieldType, Kind, Person
from tests.factories import (
    FieldDefinitionFactory,
    MarketingListFactory,
    PersonFactory,
    StaffUserFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db
STAFF = services.Source.STAFF


def stop_processing(person):
    # The stop-processing service arrives with the preference page (issue 6); until then the
    # state is planted as data, which is what crm reads.
    Person.objects.filter(pk=person.pk).update(processing_stopped_at=clock.now())
    person.refresh_from_db()


def test_create_normalises_email_and_audits_field_names_not_values():
    user = StaffUserFactory()
    person = services.person_create(
        data={"first_name": "Ada", "email": "  Ada.Lovelace@Example.ORG "}, actor=user,
        source=STAFF,
    )
    assert person.email == "ada.lovelace@example.org"
    assert person.kind == Kind.LEAD
    entry = AuditEntry.objects.get(person_id=person.pk)
    assert (entry.action, entry.actor, entry.source) == ("create", user, STAFF)
    assert entry.fields == ["email", "first_name"]
    assert "Ada" not in str(entry.fields)


def test_duplicate_email_is_refused_case_insensitively():
    PersonFactory(email="dup@example.org")
    with pytest.raises(ValidationError) as raised:
        services.person_create(data={"email": "DUP@example.org"}, source=STAFF)
    assert "email" in raised.value.message_dict


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("email", "not-an-email"),
        ("country", "Italy"),
        ("stage", "won"),
        ("region", "Mars"),
        ("kind", "customer"),
        ("first_name", 5),
        ("first_name", "x" * 151),
        ("email_opt_in", "double_opt_in"),
        ("email_opt_in", "opt_out_contact"),
        ("organisation", 999999),
        ("owner", 999999),
        ("processing_stopped_at", "2026-01-01"),
        ("locked_fields", []),
        ("id", "x"),
    ],
)
def test_create_refuses_bad_or_unwritable_values_by_field(field, value):
    with pytest.raises(ValidationError) as raised:
        services.person_create(data={field: value}, source=STAFF)
    assert field in raised.value.message_dict
    assert not Person.objects.exists()


@pytest.mark.parametrize("state", ["none", "single_opt_in_user"])
def test_staff_may_set_only_none_or_single_opt_in_user_on_create(state):
    assert services.person_create(data={"email_opt_in": state}, source=STAFF).email_opt_in == state


def test_owner_must_be_staff():
    outsider = UserFactory(is_staff=False)
    with pytest.raises(ValidationError, match="staff"):
        services.person_create(data={"owner": outsider.pk}, source=STAFF)


def test_update_records_only_changed_fields():
    person = PersonFactory(first_name="Ann", stage="new")
    services.person_update(person=person, data={"first_name": "Ann", "stage": "qualified"},
                           source=STAFF)
    entry = AuditEntry.objects.filter(person_id=person.pk, action="update").get()
    assert entry.fields == ["stage"]


def test_update_without_changes_writes_no_audit_row():
    person = PersonFactory(first_name="Ann")
    services.person_update(person=person, data={"first_name": "Ann"}, source=STAFF)
    assert not AuditEntry.objects.filter(person_id=person.pk, action="update").exists()


def test_update_refuses_kind_and_opt_in_which_have_their_own_services():
    person = PersonFactory()
    for data in ({"kind": "contact"}, {"email_opt_in": "double_opt_in"}):
        with pytest.raises(ValidationError):
            services.person_update(person=person, data=data, source=STAFF)


def test_stopped_record_refuses_every_write_even_from_a_stale_copy():
    person = PersonFactory()
    stale = Person.objects.get(pk=person.pk)
    stop_processing(person)
    with pytest.raises(ProcessingStopped):
        services.person_update(person=stale, data={"first_name": "X"}, source=STAFF)
    with pytest.raises(ProcessingStopped):
        services.person_convert_to_contact(person=stale, source=STAFF)
    assert Person.objects.get(pk=person.pk).first_name == person.first_name


def test_locked_field_is_refused_and_other_fields_still_write():
    FieldDefinitionFactory(key="shoe_size", field_type=FieldType.NUMBER)
    person = PersonFactory(phone="", custom={"shoe_size": 42})
    Person.objects.filter(pk=person.pk).update(locked_fields=["phone", "shoe_size"])
    with pytest.raises(FieldLocked) as raised:
        services.person_update(person=person, data={"phone": "+39 06 123"}, source=STAFF)
    assert raised.value.field == "phone"
    with pytest.raises(FieldLocked):
        services.person_update(person=person, data={"custom": {"shoe_size": 43}}, source=STAFF)
    services.person_update(person=person, data={"company": "Acme"}, source=STAFF)
    assert Person.objects.get(pk=person.pk).company == "Acme"


@pytest.mark.parametrize(
    ("field_type", "good", "bad"),
    [
        (FieldType.TEXT, "hello", 7),
        (FieldType.NUMBER, "12.5", "lots"),
        (FieldType.DATE, "2026-11-29", "yesterday"),
        (FieldType.CHOICE, "b", "z"),
        (FieldType.BOOLEAN, True, "perhaps"),
    ],
)
def test_custom_fields_are_validated_by_type_on_create_and_update(field_type, good, bad):
    FieldDefinitionFactory(key="extra", field_type=field_type,
                           choices=["a", "b"] if field_type == FieldType.CHOICE else [])
    person = PersonFactory(custom={"extra": good})
    assert person.custom["extra"] is not None
    with pytest.raises(ValidationError) as raised:
        services.person_update(person=person, data={"custom": {"extra": bad}}, source=STAFF)
    assert "custom.extra" in raised.value.message_dict
    with pytest.raises(ValidationError):
        services.person_create(data={"custom": {"extra": bad}}, source=STAFF)


def test_inactive_custom_field_cannot_be_written():
    FieldDefinitionFactory(key="old_field", active=False)
    with pytest.raises(ValidationError):
        services.person_create(data={"custom": {"old_field": "x"}}, source=STAFF)


def test_conversion_keeps_the_row_and_its_history():
    lead = PersonFactory(kind="lead")
    services.person_update(person=lead, data={"stage": "qualified"}, source=STAFF)
    contact = services.person_convert_to_contact(person=lead, source=STAFF)
    assert contact.pk == lead.pk
    assert contact.kind == Kind.CONTACT and contact.converted_at is not None
    actions = list(AuditEntry.objects.filter(person_id=lead.pk).order_by("id")
                   .values_list("action", flat=True))
    assert actions == ["create", "update", "convert"]
    # Converting a contact again is a no-op, not an error.
    services.person_convert_to_contact(person=contact, source=STAFF)
    assert AuditEntry.objects.filter(person_id=lead.pk, action="convert").count() == 1


def test_bulk_owner_assignment_skips_stopped_records():
    owner = StaffUserFactory()
    people = PersonFactory.create_batch(3)
    stop_processing(people[0])
    result = services.person_assign_owner(person_ids=[p.pk for p in people], owner=owner,
                                          source=STAFF)
    assert (result.done, result.skipped_stopped) == (2, 1)
    assert set(Person.objects.filter(owner=owner)) == set(people[1:])
    again = services.person_assign_owner(person_ids=[p.pk for p in people], owner=owner,
                                         source=STAFF)
    assert again.done == 0
    assert AuditEntry.objects.filter(action="assign_owner").count() == 2
    cleared = services.person_assign_owner(person_ids=[p.pk for p in people], owner=None,
                                           source=STAFF)
    assert cleared.done == 2 and not Person.objects.filter(owner__isnull=False).exists()


def test_marketing_list_add_is_idempotent_set_based_and_skips_stopped():
    mlist = MarketingListFactory()
    people = PersonFactory.create_batch(50)
    stop_processing(people[0])
    ids = [p.pk for p in people]
    with CaptureQueriesContext(connection) as queries:
        first = services.marketing_list_add(marketing_list=mlist, person_ids=ids, source=STAFF)
    assert len(queries) < 10
    again = services.marketing_list_add(marketing_list=mlist, person_ids=ids, source=STAFF)
    assert (first.done, first.skipped_stopped, again.done) == (49, 1, 0)
    assert AuditEntry.objects.filter(action="list_add").count() == 49
    assert mlist.members.count() == 49
    removed = services.marketing_list_remove(marketing_list=mlist, person_ids=ids[:10],
                                             source=STAFF)
    assert removed == 9 and mlist.members.count() == 40


def test_delete_leaves_an_audit_row_without_personal_data():
    person = PersonFactory(first_name="Zed")
    services.person_delete(person=person, source=STAFF)
    assert not Person.objects.filter(pk=person.pk).exists()
    assert AuditEntry.objects.filter(person_id=person.pk, action="delete").exists()


def test_encryption_flag_is_one_way():
    definition = services.field_definition_save(
        definition=FieldDefinition(key="tax_code", label="Tax code", is_encrypted=True)
    )
    definition.is_encrypted = False
    with pytest.raises(ValidationError) as raised:
        services.field_definition_save(definition=definition)
    assert "is_encrypted" in raised.value.message_dict
    assert FieldDefinition.objects.get(key="tax_code").is_encrypted


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"key": "email", "label": "Email again"}, "key"),
        ({"key": "tier", "label": "Tier", "field_type": FieldType.CHOICE}, "choices"),
        ({"key": "tier", "label": "Tier", "field_type": FieldType.CHOICE, "choices": [""]},
         "choices"),
        ({"key": "note", "label": "Note", "choices": ["a"]}, "choices"),
        ({"key": "Bad Key", "label": "x"}, "key"),
    ],
)
def test_field_definition_invariants(kwargs, field):
    with pytest.raises(ValidationError) as raised:
        services.field_definition_save(definition=FieldDefinition(**kwargs))
    assert field in raised.value.message_dict


def test_core_field_keeps_key_and_type():
    core = FieldDefinition.objects.get(key="email")
    assert core.is_core
    core.field_type = FieldType.NUMBER
    with pytest.raises(ValidationError):
        services.field_definition_save(definition=core)


# Addresses near the edges of Django's email patterns: plausible local parts and domains, and
# pieces with quotes, backslashes, brackets, IDN labels, non-ASCII and control characters.
_WILD = st.lists(st.sampled_from(
    list("aZ09.-_+!#$%&'*/=?^`{|}~\"\\ @[]:") + ["é", "ß", "\x7f", "\x01", "xn--", "a" * 64]),
    max_size=12).map("".join)
_PLAIN_LOCAL = st.from_regex(r"[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,12}(\.[a-z0-9_+-]{1,6}){0,2}",
                             fullmatch=True)
_PLAIN_DOMAIN = st.from_regex(r"[a-zA-Z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\.[a-z0-9-]{1,8}){0,2}",
                              fullmatch=True)
_LOCAL = st.one_of(_PLAIN_LOCAL, _PLAIN_LOCAL, st.from_regex(r'"[ -~]{0,8}"', fullmatch=True),
                   _WILD)
_DOMAIN = st.one_of(_PLAIN_DOMAIN, _PLAIN_DOMAIN,
                    st.from_regex(r"\[[0-9a-f:.]{2,16}", fullmatch=True), _WILD)


@settings(max_examples=400, deadline=None)
@given(local=_LOCAL, domain=_DOMAIN, tld=st.sampled_from(
    [".com", ".org", ".museum", ".xn--p1ai", "", ".c", ".123", "]", ".com."]))
def test_import_email_check_agrees_with_djangos_validate_email(local, domain, tld):
    address = f"{local}@{domain}{tld}"
    try:
        validate_email(address)
        expected = True
    except ValidationError:
        expected = False
    try:
        services._EagerEmailValidator()(address)
        got = True
    except ValidationError:
        got = False
    assert got == expected


def test_invalid_address_is_reported_with_the_fields_wording():
    with pytest.raises(ValidationError) as raised:
        services.person_clean_values({"email": "ada@@example.org"}, definitions=[])
    assert raised.value.message_dict == {"email": ["Enter a valid email address."]}


@given(st.text(alphabet="0123456789", min_size=1, max_size=19))
def test_card_check_digit_is_the_textbook_luhn_check(digits):
    total = 0
    for place, digit in enumerate(reversed(digits)):
        value = int(digit) * (2 if place % 2 else 1)
        total += value - 9 if value > 9 else value
    assert services._luhn_ok(digits) == (total % 10 == 0)


_PLAIN_NAMES = sorted(services._plain_columns())


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(_PLAIN_NAMES), value=st.one_of(
    st.text(max_size=220),
    st.sampled_from(["new", " customer ", "EU", "eu", "en", " ", "", "x" * 150, "x" * 151]),
    st.builds(lambda choice, pad: pad + choice + pad,
              st.sampled_from(["new", "qualified", "APAC", "it"]),
              st.sampled_from(["", " ", "\t"])),
))
def test_the_fast_accept_of_plain_fields_answers_as_the_full_field_check(name, value):
    """`_clean_values` accepts most text of the plain core fields without `_clean_core`: for
    any text it must give the same value, or the same error, as the full check."""
    try:
        expected = ("value", services._clean_core(name, value))
    except ValidationError as error:
        expected = ("errors", error.messages)
    cleaned, errors = services._clean_values({name: value}, person=None, definitions=[])
    got = ("value", cleaned[name]) if name in cleaned else ("errors", errors[name])
    assert got == expected


def test_plain_fields_are_the_ones_with_no_check_beyond_their_column():
    assert set(_PLAIN_NAMES) == {"first_name", "last_name", "phone", "company", "region",
                                 "stage", "language"}
