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


def test_the_log_notices_rows_removed_from_its_end_and_a_log_emptied():
    admin = AdminUserFactory()
    person = PersonFactory(card_number=CARD)
    for i in range(3):
        reveal(person, admin, reason=f"reason {i}")
    assert access_log.verify() == []
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM encryption_fieldaccesslog WHERE seq = 3")
    assert access_log.verify() == ["rows 3..3 were removed from the end"]
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM encryption_fieldaccesslog")
    assert access_log.verify() == ["rows 1..3 were removed from the end"]


def test_the_log_notices_a_head_record_altered_or_removed():
    admin = AdminUserFactory()
    person = PersonFactory(card_number=CARD)
    for i in range(2):
        reveal(person, admin, reason=f"reason {i}")
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM encryption_fieldaccesslog WHERE seq = 2")
        cursor.execute("UPDATE encryption_fieldaccessloghead SET seq = 1")  # no key: no mac
    assert access_log.verify() == ["the head record was altered"]
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM encryption_fieldaccessloghead")
    assert access_log.verify() == ["the head record is missing"]


def test_verify_access_log_command_fails_on_a_removed_tail():
    from django.core.management import CommandError, call_command

    reveal(PersonFactory(card_number=CARD), AdminUserFactory())
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM encryption_fieldaccesslog")
    with pytest.raises(CommandError, match="broken"):
        call_command("verify_access_log")


def test_deleting_a_staff_member_leaves_their_log_rows_as_they_were():
    admin = AdminUserFactory()
    reveal(PersonFactory(card_number=CARD), admin)
    user_id = admin.pk
    admin.delete()
    row = FieldAccessLog.objects.get()
    assert (row.user_id, row.username) == (user_id, admin.username)
    assert access_log.verify() == []


def test_a_value_whose_data_key_was_destroyed_is_not_revealed_nor_logged(admin_api):
    from encryption.datakeys import destroy_data_key

    person = PersonFactory(card_number=CARD)
    destroy_data_key(person.pk)
    response = admin_api.post(f"/api/persons/{person.pk}/reveal/card_number/",
                              {"reason": "refund"}, format="json")
    assert response.status_code == 410
    assert response.json()["code"] == "value_unreadable"
    assert not FieldAccessLog.objects.exists()


def test_a_master_key_still_in_use_cannot_leave_the_configuration_unnoticed(settings):
    from encryption.checks import check_master_keys_in_use
    from tests.conftest import TEST_KEYS

    person = PersonFactory(card_number=CARD)  # its data key is wrapped by t1, the primary
    assert check_master_keys_in_use(None, databases=["default"]) == []
    settings.FIELD_ENCRYPTION_KEYS = TEST_KEYS[1:]  # t1 dropped while it still wraps a key
    errors = check_master_keys_in_use(None, databases=["default"])
    assert [e.id for e in errors] == ["encryption.E002"] and "t1" in errors[0].msg
    with pytest.raises(ServiceError, match="can no longer be opened"):
        reveal(person, AdminUserFactory())
    assert not FieldAccessLog.objects.exists()


def test_a_burst_of_reveals_across_a_window_boundary_alerts_the_admins(settings):
    import datetime

    from config import clock

    settings.REVEAL_ALERT_THRESHOLD = 4
    admin = AdminUserFactory(email="ada@staff.example")
    person = PersonFactory(card_number=CARD)
    start = datetime.datetime(2026, 1, 1, 10, 8, tzinfo=datetime.UTC)  # 2 min before 10:10
    for minute in range(4):  # 10:08, 10:09 | 10:10, 10:11: two in each fixed 10-min window
        with clock.frozen(start + datetime.timedelta(minutes=minute)):
            reveal(person, admin)
    assert len(mail.outbox) == 1


def test_a_failed_alert_email_does_not_undo_the_reveal(settings, monkeypatch):
    from crm import reveal as reveal_module

    def refuse(*args, **kwargs):
        raise ConnectionRefusedError("no mail server")

    monkeypatch.setattr(reveal_module, "send_mail", refuse)
    settings.REVEAL_ALERT_THRESHOLD = 1
    AdminUserFactory(email="ada@staff.example")
    assert reveal(PersonFactory(card_number=CARD), AdminUserFactory()) == CARD
    assert FieldAccessLog.objects.count() == 1


def test_api_reveal_reaches_a_custom_field_whose_key_has_capitals(admin_api):
    definition = FieldDefinitionFactory(key="TaxCode", is_encrypted=True)
    definition.reveal_groups.add(*FieldDefinition.objects.get(key="card_number")
                                 .reveal_groups.all())
    person = PersonFactory(custom={"TaxCode": "RSSMRA85T10A562S"})
    response = admin_api.post(f"/api/persons/{person.pk}/reveal/TaxCode/",
                              {"reason": "check"}, format="json")
    assert response.status_code == 200 and response.json()["value"] == "RSSMRA85T10A562S"


@pytest.mark.django_db(transaction=True)
def test_the_log_row_is_committed_when_the_reveal_returns_its_value(monkeypatch):
    import psycopg2
    from django.db import connections

    from crm import reveal as reveal_module

    if connection.vendor != "postgresql":
        pytest.skip("reads the row from a second connection")
    seen = []
    real_append = reveal_module.access_log.append

    def append(**kwargs):
        row = real_append(**kwargs)
        params = connections["default"].get_connection_params()
        other = psycopg2.connect(**{k: v for k, v in params.items()
                                    if k in ("dbname", "host", "port", "user", "password")})
        with other, other.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM encryption_fieldaccesslog WHERE seq = %s",
                           [row.seq])
            seen.append(cursor.fetchone()[0])
        other.close()
        return row

    monkeypatch.setattr(reveal_module.access_log, "append", append)
    # Its own field and group: an earlier transactional test's flush removed the migrations'.
    from django.contrib.auth.models import Group

    from tests.factories import UserFactory

    definition = FieldDefinitionFactory(key="tax_code", is_encrypted=True)
    group = Group.objects.create(name="Tax desk")
    definition.reveal_groups.add(group)
    user = UserFactory(is_staff=True)
    user.groups.add(group)
    person = PersonFactory(custom={"tax_code": "RSSMRA85T10A562S"})
    assert reveal(person, user, field="tax_code") == "RSSMRA85T10A562S"
    assert seen == [1]  # visible to every other connection before the value was returned
