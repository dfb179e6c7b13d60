"""A member of staff works a contact in the staff UI, end to end in a real browser."""

import re

import pytest
from playwright.sync_api import expect

from crm.models import AuditEntry, FieldType, Person
from tests.factories import FieldDefinitionFactory, PersonFactory, StaffUserFactory

# live_server answers from another thread, so the data must be committed (transaction=True);
# the roles the flush may have removed are recreated by conftest's `_migrated_state`.
pytestmark = pytest.mark.django_db(transaction=True)


def test_staff_finds_a_contact_edits_custom_field_and_saves(page, login, screenshot):
    staff = StaffUserFactory(username="sam.staff")
    FieldDefinitionFactory(
        key="favourite_product", label="Favourite product", field_type=FieldType.TEXT,
        is_pii=False,
    )
    PersonFactory.create_batch(3, kind="contact")
    # Same surname, but a lead: the Contacts list must not offer it.
    PersonFactory(kind="lead", first_name="Bruno", last_name="Zanzottera")
    target = PersonFactory(
        kind="contact", first_name="Ottavia", last_name="Zanzottera",
        email="ottavia.zanzottera@example.org", company="Filanda Srl",
    )

    login(staff)
    page.goto("/admin/crm/contact/")
    expect(page.locator("#site-name")).to_contain_text("Consenso")
    page.fill("#searchbar", "Zanzottera")
    page.click("#changelist-search [type=submit]")
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("ottavia.zanzottera@example.org")
    screenshot("01-list-after-search")

    rows.first.get_by_role("link", name="Ottavia Zanzottera").click()
    expect(page).to_have_url(re.compile(rf"/admin/crm/contact/{target.pk}/change/"))
    custom_fieldset = page.locator("fieldset").filter(
        has=page.get_by_role("heading", name="Custom fields")
    )
    field = custom_fieldset.locator("#id_custom__favourite_product")
    expect(field).to_be_visible()
    expect(field).to_have_value("")
    field.fill("Consenso Pro")
    screenshot("02-filled-form")

    page.click("input[name=_save]")
    success = page.locator(".messagelist .success")
    expect(success).to_contain_text("Ottavia Zanzottera")
    expect(success).to_contain_text("was changed successfully")
    screenshot("03-after-save")

    assert Person.objects.get(pk=target.pk).custom == {"favourite_product": "Consenso Pro"}
    entry = AuditEntry.objects.get(person_id=target.pk, action="update")
    # Only the field the staff member touched is recorded: an untouched core field showing up
    # here would mean the form reports changes the user never made.
    assert entry.fields == ["favourite_product"]
    assert (entry.actor, entry.source) == (staff, "staff")
