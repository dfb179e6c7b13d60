"""`manage.py seed_demo`: the demo data `make run` shows, written through the services."""

import io
import re

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command

from crm import services
from crm.management.commands.seed_demo import DEV_PASSWORD
from crm.models import (
    AuditEntry,
    EmailOptIn,
    FieldDefinition,
    FieldType,
    Kind,
    ListMembership,
    MarketingList,
    Organisation,
    Person,
)
from crm.registry import clean_custom, custom_definitions
from crm.roles import ADMINS, STAFF

EU = {"AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT",
      "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE"}
REGION_COUNTRIES = {
    "EU": EU,
    "UK": {"GB"},
    "NA": {"US", "CA"},
    "LATAM": {"MX", "AR", "BR", "CL", "CO", "PE", "UY"},
    "APAC": {"AU", "NZ", "SG", "JP", "IN", "CN", "KR", "HK"},
    "MEA": {"MA", "SN", "ZA", "AE", "EG", "NG", "KE", "SA", "IL"},
}
DEMO_EMAIL = re.compile(r"^[a-z0-9]+(\.[a-z0-9]+)*\.\d+@example\.com$")


@pytest.fixture(autouse=True)
def dev_settings(settings):
    # pytest-django runs with DEBUG off; the command is for development databases.
    settings.DEBUG = True
    # The default hasher spends most of a second per password by design; not what we test.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return settings


def seed(**options) -> str:
    out = io.StringIO()
    call_command("seed_demo", stdout=out, **options)
    return out.getvalue()


def snapshot() -> dict:
    return {
        "people": Person.objects.count(),
        "contacts": Person.objects.filter(kind=Kind.CONTACT).count(),
        "organisations": Organisation.objects.count(),
        "lists": MarketingList.objects.count(),
        "memberships": ListMembership.objects.count(),
        "definitions": FieldDefinition.objects.count(),
        "users": get_user_model().objects.count(),
        "audit": AuditEntry.objects.count(),
    }


@pytest.mark.django_db
def test_seeds_the_default_count_of_varied_people_through_the_person_service():
    seed()

    people = list(Person.objects.all())
    assert len(people) == 300
    assert {p.kind for p in people} == {Kind.LEAD, Kind.CONTACT}
    assert len({p.stage for p in people}) >= 5
    assert len({p.region for p in people}) >= 4
    assert len({p.country for p in people}) >= 8
    for person in people:
        assert person.country in REGION_COUNTRIES[person.region], person.email
    # The person service allows only these two at creation; both appear.
    assert {p.email_opt_in for p in people} == {
        EmailOptIn.NONE, EmailOptIn.SINGLE_OPT_IN_USER}
    # Every person has the service's audit row: nobody was written around it.
    creates = AuditEntry.objects.filter(action="create", source=services.Source.SYSTEM)
    assert set(creates.values_list("person_id", flat=True)) == {p.pk for p in people}
    converted = [p for p in people if p.converted_at is not None]
    assert converted and all(p.kind == Kind.CONTACT for p in converted)
    assert AuditEntry.objects.filter(action="convert").count() == len(converted)
    assert any(p.kind == Kind.CONTACT and p.converted_at is None for p in people)


@pytest.mark.django_db
def test_demo_addresses_are_unique_ascii_and_clearly_fake():
    seed(count=80)

    emails = list(Person.objects.values_list("email", flat=True))
    assert len(emails) == len(set(emails)) == 80
    for email in emails:
        assert DEMO_EMAIL.match(email), email
    numbers = sorted(int(e.rsplit(".", 2)[-2].split("@")[0]) for e in emails)
    assert numbers == list(range(1, 81))


@pytest.mark.django_db
def test_people_get_owners_organisations_and_list_memberships():
    seed(count=120)

    people = Person.objects.select_related("owner", "organisation")
    owners = {p.owner for p in people if p.owner is not None}
    assert len(owners) >= 3
    assert all(owner.is_staff for owner in owners)
    assert people.filter(owner__isnull=True).exists()
    assert Organisation.objects.count() >= 25
    with_org = [p for p in people if p.organisation is not None]
    assert len(with_org) >= 20
    for person in with_org:
        assert person.organisation.country == person.country
        assert person.company == person.organisation.name
    lists = MarketingList.objects.all()
    assert lists.count() >= 3
    assert sum(1 for m in lists if m.members.exists()) >= 3
    assert set(ListMembership.objects.values_list("source", flat=True)) == {
        services.Source.SYSTEM}


@pytest.mark.django_db
def test_custom_fields_are_defined_and_most_people_have_values_that_pass_the_registry():
    seed(count=100)

    types = dict(FieldDefinition.objects.filter(is_core=False).values_list("key", "field_type"))
    assert types == {
        "industry": FieldType.CHOICE, "budget": FieldType.NUMBER,
        "first_contact": FieldType.DATE, "newsletter_topic": FieldType.TEXT,
        "vip": FieldType.BOOLEAN,
    }
    definitions = custom_definitions()
    people = list(Person.objects.all())
    assert sum(1 for p in people if len(p.custom) >= 3) >= 0.7 * len(people)
    for person in people:
        cleaned = clean_custom(person.custom, current={}, definitions=definitions, creating=True)
        assert cleaned == person.custom, person.email
    for key in types:
        assert sum(1 for p in people if key in p.custom) >= 0.5 * len(people), key


@pytest.mark.django_db
def test_creates_admin_and_staff_logins_in_their_groups_and_prints_them(client, settings):
    out = seed(count=40)

    users = get_user_model().objects
    admin, staff = users.get(username="admin"), users.get(username="staff")
    assert admin.is_staff and staff.is_staff
    assert list(admin.groups.values_list("name", flat=True)) == [ADMINS]
    assert list(staff.groups.values_list("name", flat=True)) == [STAFF]
    assert admin.check_password(DEV_PASSWORD) and staff.check_password(DEV_PASSWORD)
    assert f"{settings.SITE_URL}/admin/" in out
    assert f"admin / {DEV_PASSWORD}" in out
    assert f"staff / {DEV_PASSWORD}" in out
    assert client.login(username="staff", password=DEV_PASSWORD)
    assert client.get("/admin/").status_code == 200


@pytest.mark.django_db
def test_password_options_set_the_logins_and_a_rerun_keeps_a_changed_password():
    seed(count=0, admin_password="admin-secret-1", staff_password="staff-secret-1")
    users = get_user_model().objects
    assert users.get(username="admin").check_password("admin-secret-1")
    assert users.get(username="staff").check_password("staff-secret-1")

    out = seed(count=0)

    assert users.get(username="admin").check_password("admin-secret-1")
    assert "admin-secret-1" not in out and DEV_PASSWORD not in out
    assert "--admin-password resets it" in out

    seed(count=0, admin_password="admin-secret-2")
    assert users.get(username="admin").check_password("admin-secret-2")


@pytest.mark.django_db
def test_running_twice_creates_no_duplicates_and_says_it_found_the_demo_data():
    seed(count=40)
    before = snapshot()

    out = seed(count=40)

    assert snapshot() == before
    assert before["people"] == 40
    assert "Found existing demo data" in out
    assert "Created" not in out


@pytest.mark.django_db
def test_a_larger_count_adds_only_the_missing_people():
    seed(count=20)
    first = set(Person.objects.values_list("email", flat=True))

    seed(count=40)

    emails = set(Person.objects.values_list("email", flat=True))
    assert len(emails) == 40
    assert first < emails
    assert Organisation.objects.filter(name="Aurora Analytics Ltd").count() == 1


@pytest.mark.django_db
def test_fits_values_to_fields_an_admin_changed_or_made_required():
    services.field_definition_save(definition=FieldDefinition(
        key="industry", label="Industry", field_type=FieldType.CHOICE, choices=["Farming"]))
    services.field_definition_save(definition=FieldDefinition(
        key="budget", label="Budget", field_type=FieldType.TEXT))
    services.field_definition_save(definition=FieldDefinition(
        key="vat_number", label="VAT number", field_type=FieldType.TEXT, required=True))

    seed(count=40)

    people = list(Person.objects.all())
    assert len(people) == 40
    assert {p.custom.get("industry") for p in people} <= {"Farming", None}
    assert not any("budget" in p.custom for p in people)
    assert all(p.custom["vat_number"] for p in people)


@pytest.mark.django_db
def test_refuses_to_run_with_debug_off_unless_forced(settings):
    settings.DEBUG = False

    with pytest.raises(CommandError, match="--force"):
        seed(count=5)
    assert not Person.objects.exists()
    assert not get_user_model().objects.filter(username__in=["admin", "staff"]).exists()

    seed(count=5, force=True)
    assert Person.objects.count() == 5
    assert Group.objects.get(name=ADMINS).user_set.filter(username="admin").exists()
