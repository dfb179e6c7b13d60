import pytest
from django.core import mail
from django.db import connection

from crm.errors import ServiceError
from crm.models import FieldDefinition
from crm.reveal import NothingToReveal, RevealDenied, RevealRateLimited, person_reveal
from encryption import access_log
from encryption.models import FieldAccessLog
from tests.factories import (
    AdminUserFactory,
    FieldDefinitionFactory,
    PersonFactory,
    StaffUserFactory,
)

pytestmark = pytest.mark.django_db
CARD = "4111111111111111"


def reveal(person, user, field="card_number", reason="customer asked on the phone"):
    return person_reveal(person=person, field_key=field, user=user, reason=reason,
                         ip="10.0.0.1")


@pytest.mark.parametrize(("role", "allowed"), [("admin", True), ("staff", False),
                                                ("nobody", False)])
def test_reveal_permission_matrix_and_one_log_row_per_reveal(role, allowed):
    from tests.factories import UserFactory

    user = {"admin": AdminUserFactory, "staff": StaffUserFactory,
            "nobody": UserFactory}[role]()
    person = PersonFactory(card_number=CARD)
    if allowed:
        assert reveal(person, user) == CARD
        row = FieldAccessLog.objects.get()
        assert (row.username, row.field, row.subject_id, row.ip) == (
            user.username, "card_number", person.pk, "10.0.0.1")
        assert row.role == "Admins"
    else:
        with pytest.raises(RevealDenied):
            reveal(person, user)
        assert not FieldAccessLog.objects.exists()


def test_reveal_groups_come_from_the_field_definition():
    staff = StaffUserFactory()
    definition = FieldDefinition.objects.get(key="national_id")
    definition.reveal_groups.add(*staff.groups.all())
    person = PersonFactory(national_id="AB123456")
    assert reveal(person, staff, field="national_id") == "AB123456"
    with pytest.raises(RevealDenied):
        reveal(person, staff, field="card_number")


@pytest.mark.parametrize("reason", ["", "   "])
def test_a_reason_is_required(reason):
    with pytest.raises(ServiceError, match="why"):
        reveal(PersonFactory(card_number=CARD), AdminUserFactory(), reason=reason)
    assert not FieldAccessLog.objects.exists()


def test_nothing_stored_is_a_clear_error_without_a_log_row():
    with pytest.raises(NothingToReveal):
        reveal(PersonFactory(), AdminUserFactory())
    assert not FieldAccessLog.objects.exists()


def test_encrypted_custom_field_reveal():
    definition = FieldDefinitionFactory(key="tax_code", is_encrypted=True)
    admin = AdminUserFactory()
    definition.reveal_groups.add(*admin.groups.all())
    person = PersonFactory(custom={"tax_code": "RSSMRA85T10A562S"})
    assert reveal(person, admin, field="tax_code") == "RSSMRA85T10A562S"


def test_rate_limit_and_bulk_reveal_alert(settings):
    settings.REVEAL_RATE_LIMIT_PER_HOUR = 3
    settings.REVEAL_ALERT_THRESHOLD = 2
    admin = AdminUserFactory(email="ada@staff.example")
    person = PersonFactory(card_number=CARD)
    for _ in range(3):
        reveal(person, admin)
    with pytest.raises(RevealRateLimited):
        reveal(person, admin)
    assert FieldAccessLog.objects.count() == 3
    assert len(mail.outbox) == 1
    assert CARD not in mail.outbox[0].body and person.email not in mail.outbox[0].body


def test_chain_verification_finds_an_edited_and_a_deleted_row():
    admin = AdminUserFactory()
    person = PersonFactory(card_number=CARD)
    for i in range(4):
        reveal(person, admin, reason=f"reason {i}")
    assert access_log.verify() == []
    with connection.cursor() as cursor:
        cursor.execute("UPDATE encryption_fieldaccesslog SET reason = 'nothing to see' "
                       "WHERE seq = 2")
    assert access_log.verify() == ["row 2 was altered"]
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM encryption_fieldaccesslog WHERE seq = 3")
    problems = access_log.verify()
    assert "row 2 was altered" in problems and "rows 3..3 are missing" in problems


def test_api_reveal_and_refusals(staff_api, admin_api):
    person = PersonFactory(card_number=CARD)
    url = f"/api/persons/{person.pk}/reveal/card_number/"
    refused = staff_api.post(url, {"reason": "curious"}, format="json")
    assert refused.status_code == 403 and CARD not in refused.content.decode()
    assert admin_api.post(url, {}, format="json").status_code == 400
    ok = admin_api.post(url, {"reason": "verifying a refund"}, format="json")
    assert ok.status_code == 200 and ok.json()["value"] == CARD
    assert ok.json()["remask_after_seconds"] == 30
    assert FieldAccessLog.objects.count() == 1
    listing = admin_api.get("/api/persons/").content.decode()
    assert CARD not in listing and "••••••••••••1111" in listing


def test_staff_admin_page_shows_masks_and_reveal_button_only_when_allowed(staff_user):
    from django.test import Client

    staff_client, admin_client_ = Client(), Client()
    staff_client.force_login(staff_user)
    admin_client_.force_login(AdminUserFactory())
    person = PersonFactory(card_number=CARD)
    url = f"/admin/crm/person/{person.pk}/change/"
    staff_page = staff_client.get(url).content.decode()
    assert "••••••••••••1111" in staff_page and CARD not in staff_page
    assert "reveal-button" not in staff_page
    admin_page = admin_client_.get(url).content.decode()
    assert "reveal-button" in admin_page and CARD not in admin_page
    reveal_url = f"/admin/crm/person/{person.pk}/reveal/card_number/"
    assert staff_client.post(reveal_url, {"reason": "x"}).status_code == 403
    shown = admin_client_.post(reveal_url, {"reason": "refund"})
    assert shown.json()["value"] == CARD and "no-store" in shown["Cache-Control"]
    assert admin_client_.get(reveal_url).status_code == 405
