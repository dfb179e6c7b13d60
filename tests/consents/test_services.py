import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from consents import ledger, services
from consents.models import ConsentEvent, PurposeKind, Source, Verification
from consents.selectors import consent_states, people_on_outdated_versions
from crm import services as crm_services
from crm.errors import FieldLocked, ServiceError
from crm.models import FieldDefinition, Person
from tests.factories import PersonFactory, StaffUserFactory

pytestmark = pytest.mark.django_db
CONFIRMED = {"source": Source.PORTAL, "verified_by": Verification.EMAIL_CONFIRMATION,
             "evidence": {"message_id": "<abc@consenso>"}}


@pytest.fixture
def news():
    return services.purpose_create(key="news", name="News", kind=PurposeKind.CUSTOM,
                                   title="Newsletter", text="We send news monthly.")


@pytest.fixture
def phone_storage():
    return services.purpose_create(
        key="store_phone", name="Store phone", kind=PurposeKind.DATA_STORAGE,
        field=FieldDefinition.objects.get(key="phone"), title="Phone", text="We keep your phone.")


def test_grant_revoke_request_build_a_verifiable_chain(news):
    person = PersonFactory()
    services.consent_request(person=person, purpose=news, source=Source.STAFF)
    services.consent_grant(person=person, purpose=news, ip="203.0.113.9",
                           user_agent="Mozilla/5.0", **CONFIRMED)
    services.consent_revoke(person=person, purpose=news, **CONFIRMED)
    events = list(ConsentEvent.objects.filter(person_id=person.pk).order_by("seq"))
    assert [(e.seq, e.action, e.state) for e in events] == [
        (1, "request", "pending"), (2, "grant", "granted"), (3, "revoke", "revoked")]
    assert events[1].prev_hash == events[0].hash
    assert events[1].ip_hash and "203.0.113.9" not in events[1].ip_hash
    assert ledger.verify_chain(events) == []
    assert consent_states(person) == {"news": "revoked"}


def test_ledger_rejects_update_and_delete_at_the_database(news):
    person = PersonFactory()
    services.consent_grant(person=person, purpose=news, **CONFIRMED)
    event = ConsentEvent.objects.get()
    for statement in ("UPDATE consents_consentevent SET state = 'revoked' WHERE id = %s",
                      "DELETE FROM consents_consentevent WHERE id = %s"):
        with (pytest.raises(DatabaseError, match="append-only"), transaction.atomic(),
              connection.cursor() as cursor):
            cursor.execute(statement, [event.pk])
    with pytest.raises(DatabaseError), transaction.atomic():
        ConsentEvent.objects.filter(pk=event.pk).update(state="revoked")


def test_tampering_is_detected_by_the_chain_check(news, capsys):
    person = PersonFactory()
    for _ in range(3):
        services.consent_grant(person=person, purpose=news, **CONFIRMED)
    call_command("verify_consent_ledger")
    with connection.cursor() as cursor:
        # Only a database owner can do this; the check must still catch it.
        cursor.execute("SET LOCAL session_replication_role = replica")  # skips user triggers
        cursor.execute("UPDATE consents_consentevent SET source = 'staff' WHERE seq = 2")
        cursor.execute("SET LOCAL session_replication_role = DEFAULT")
    with pytest.raises(CommandError, match="broken"):
        call_command("verify_consent_ledger")
    assert "event 2 was altered" in capsys.readouterr().err


def test_revoked_storage_consent_clears_and_locks_field_and_a_new_grant_unlocks(
    phone_storage, staff_api
):
    person = PersonFactory(phone="+39 06 1234567")
    services.consent_revoke(person=person, purpose=phone_storage, **CONFIRMED)
    person.refresh_from_db()
    assert person.phone == "" and person.locked_fields == ["phone"]
    with pytest.raises(FieldLocked):
        crm_services.person_update(person=person, data={"phone": "+39 06 7654321"},
                                   source="staff")
    response = staff_api.patch(f"/api/persons/{person.pk}/", {"phone": "123"}, format="json")
    assert response.status_code == 400 and "phone" in response.json()
    services.consent_grant(person=person, purpose=phone_storage, **CONFIRMED)
    crm_services.person_update(person=person, data={"phone": "+39 06 7654321"}, source="staff")
    assert Person.objects.get(pk=person.pk).phone == "+39 06 7654321"


def test_revoking_storage_of_a_sensitive_field_shreds_its_value():
    purpose = services.purpose_create(
        key="store_card", name="Card", kind=PurposeKind.DATA_STORAGE,
        field=FieldDefinition.objects.get(key="card_number"), title="Card", text="We keep it.")
    person = PersonFactory(card_number="4111111111111111")
    services.consent_revoke(person=person, purpose=purpose, **CONFIRMED)
    person.refresh_from_db()
    assert person.card_number is None and person.card_number_mask == ""
    assert person.locked_fields == ["card_number"]


def test_staff_recorded_answer_needs_the_staff_member_and_a_note(news):
    person = PersonFactory()
    staff = StaffUserFactory()
    with pytest.raises(ServiceError, match="note"):
        services.consent_grant(person=person, purpose=news, source=Source.STAFF,
                               verified_by=Verification.STAFF_USER, actor=staff)
    consent = services.consent_grant(person=person, purpose=news, source=Source.STAFF,
                                     verified_by=Verification.STAFF_USER, actor=staff,
                                     note="Signed paper form, 2026-11-28")
    assert consent.last_event.evidence == {"user_id": staff.pk,
                                           "note": "Signed paper form, 2026-11-28"}


def test_a_changed_text_makes_a_new_version_and_outdated_grants_are_listed(news):
    old, fresh = PersonFactory(), PersonFactory()
    services.consent_grant(person=old, purpose=news, **CONFIRMED)
    same = services.purpose_publish_version(purpose=news, title="Newsletter",
                                            text="We send news monthly.")
    assert same.version == 1
    v2 = services.purpose_publish_version(purpose=news, title="Newsletter",
                                          text="We send news weekly.")
    assert v2.version == 2
    services.consent_grant(person=fresh, purpose=news, **CONFIRMED)
    assert list(people_on_outdated_versions(news)) == [old]


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"kind": PurposeKind.DATA_STORAGE}, "field"),
    ({"kind": PurposeKind.CUSTOM, "field": "phone"}, "field"),
    ({"kind": PurposeKind.CUSTOM, "visibility_rule": {"field": "ghost", "op": "empty"}},
     "visibility_rule"),
])
def test_purpose_invariants(kwargs, field):
    if kwargs.get("field"):
        kwargs["field"] = FieldDefinition.objects.get(key=kwargs["field"])
    with pytest.raises(ValidationError) as raised:
        services.purpose_create(key="p", name="P", title="T", text="X", **kwargs)
    assert field in raised.value.message_dict


def test_a_grant_lapses_after_its_time_to_live():
    import datetime

    from config import clock
    from consents.tasks import expire_consents

    purpose = services.purpose_create(key="promo", name="Promo", kind=PurposeKind.CUSTOM,
                                      title="T", text="T", ttl_days=30)
    person = PersonFactory()
    consent = services.consent_grant(person=person, purpose=purpose, **CONFIRMED)
    assert consent.expires_at is not None
    with clock.frozen(consent.expires_at - datetime.timedelta(seconds=1)):
        assert expire_consents.delay().get() == 0
    with clock.frozen(consent.expires_at + datetime.timedelta(seconds=1)):
        assert expire_consents.delay().get() == 1
    assert consent_states(person) == {"promo": "revoked"}
    last = ConsentEvent.objects.filter(person_id=person.pk).order_by("-seq").first()
    assert (last.action, last.source) == ("expire", "system")


def test_consent_report_counts_and_csv(staff_client, news):
    granted = PersonFactory()
    PersonFactory()
    services.consent_grant(person=granted, purpose=news, **CONFIRMED)
    page = staff_client.get("/admin/consents/consentpurpose/report/")
    assert page.status_code == 200 and b"News" in page.content
    csv_body = staff_client.get("/admin/consents/consentpurpose/report/?format=csv")
    lines = csv_body.content.decode().splitlines()
    assert lines[0] == "purpose,unknown,pending,granted,revoked"
    assert lines[1] == "news,1,0,1,0"


def test_locked_field_is_disabled_in_the_staff_form_and_a_posted_value_is_ignored(
    phone_storage, staff_client
):
    person = PersonFactory(kind="contact", phone="+39 06 1234567")
    services.consent_revoke(person=person, purpose=phone_storage, **CONFIRMED)
    url = f"/admin/crm/contact/{person.pk}/change/"
    page = staff_client.get(url).content.decode()
    assert "Locked: the person withdrew consent" in page
    form = {"first_name": person.first_name, "last_name": person.last_name,
            "email": person.email, "phone": "+39 06 9999999", "language": "",
            "company": person.company, "organisation": "", "country": "IT", "region": "EU",
            "stage": "new", "owner": "", "national_id": "", "card_number": "", "_save": "Save",
            "consents-TOTAL_FORMS": "1", "consents-INITIAL_FORMS": "1"}
    staff_client.post(url, form)
    assert Person.objects.get(pk=person.pk).phone == ""
