"""Erasure completeness (GDPR Art. 17): plant one person's distinctive values in every app that
stores personal data, plant a second person the same way, erase the first, then scan every
text, JSON and binary column of every table. None of the erased person's values may remain;
the same scan must still find the kept person's (proof that it can find them at all)."""

import io

import pytest
from django.contrib.admin.sites import site
from django.core.management import call_command
from django.db import connection
from django.test import RequestFactory

from campaigns import sender
from campaigns.conversations import inbound_record
from campaigns.emails import enqueue
from campaigns.models import (
    DoubleOptInRequest,
    EmailMessage,
    InboundMessage,
    MailboxMessage,
    WebForm,
)
from campaigns.webforms import webform_submit
from consents import ledger
from consents import services as consent_services
from consents.models import ConsentEvent, Verification
from crm import imports, rights, services
from crm.models import FieldDefinition, FieldType, Person, SuppressedAddress
from crm.reveal import person_reveal
from encryption.models import DataKey, FieldAccessLog
from tests.factories import AdminUserFactory, FieldDefinitionFactory

pytestmark = pytest.mark.django_db

SCANNED_TYPES = ("text", "character varying", "character", "json", "jsonb", "bytea")
PEOPLE = {
    "erased": {"tag": "Quillfeather", "phone": "+39 06 7771 2345",
               "national_id": "QF7788991", "card": "4012888888881881",
               "tax_code": "QFTAX12345X", "ip": "203.0.113.77"},
    "kept": {"tag": "Brambleton", "phone": "+39 02 4448 9876",
             "national_id": "BT4455662", "card": "5555555555554444",
             "tax_code": "BTTAX67890Y", "ip": "198.51.100.42"},
}


def scan(value: str) -> list[str]:
    """Every `table.column` (public schema) whose stored text contains `value`."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' AND data_type = ANY(%s) "
            "AND table_name IN (SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_type = 'BASE TABLE')",
            [list(SCANNED_TYPES)])
        columns = cursor.fetchall()
        hits = []
        for table, column, data_type in columns:
            quoted = f'{connection.ops.quote_name(table)}.{connection.ops.quote_name(column)}'
            if data_type == "bytea":
                where = f"position(convert_to(%s, 'UTF8') in {quoted}) > 0"
                param = value
            else:
                where = f"{quoted}::text ILIKE %s"
                param = f"%{value}%"
            cursor.execute(
                f"SELECT 1 FROM {connection.ops.quote_name(table)} WHERE {where} LIMIT 1",  # noqa: S608
                [param])
            if cursor.fetchone():
                hits.append(f"{table}.{column}")
    return hits


@pytest.fixture
def world(settings):
    """Both people, planted through the product's own paths."""
    settings.EMAIL_BACKEND = "campaigns.mailbox.MailboxBackend"
    admin = AdminUserFactory()
    FieldDefinitionFactory(key="nickname", field_type=FieldType.TEXT, is_pii=True)
    tax = FieldDefinitionFactory(key="tax_code", field_type=FieldType.TEXT, is_encrypted=True,
                                 mask_rule="last:3")
    from django.contrib.auth.models import Group

    admins = Group.objects.get(name="Admins")
    tax.reveal_groups.add(admins)
    FieldDefinition.objects.get(key="card_number").reveal_groups.add(admins)
    purpose = consent_services.purpose_create(
        key="product-news", name="Product news", kind="custom", title="Product news",
        text="We may tell you about new products.")
    form = WebForm.objects.create(slug="signup", name="Sign up", autoresponder=True,
                                  fields=["first_name", "last_name", "phone", "company"])
    form.consent_purposes.add(purpose)

    planted = {}
    for role, p in PEOPLE.items():
        tag = p["tag"]
        values = {"first_name": f"{tag}ina", "last_name": f"{tag}son",
                  "email": f"{tag.lower()}.mail@example.org", "phone": p["phone"],
                  "company": f"{tag} Consulting"}
        # A web form: the person, a consent with keyed IP/UA hashes, the opt-in, the double
        # opt-in request and its email, and an autoresponder.
        person = webform_submit(
            form=form, data={**values, "marketing": "on", "consent_product-news": "on"},
            ip=p["ip"], user_agent=f"{tag}Browser/1.0").person
        person = services.person_update(person=person, source="staff", actor=admin, data={
            "national_id": p["national_id"], "card_number": p["card"],
            "custom": {"nickname": f"{tag}nick", "tax_code": p["tax_code"]}})
        consent_services.consent_grant(
            person=person, purpose=purpose, source="staff", verified_by=Verification.STAFF_USER,
            actor=admin, note="recorded at the trade fair")
        inbound_record(person=person, message_id=f"<{tag.lower()}-1@mail.example>",
                       subject=f"{tag} question", body=f"{tag} inbound body", user=admin)
        enqueue(person=person, kind="adhoc", template="adhoc",
                context={"subject": f"Hello {tag}", "body": f"{tag} outbound body"},
                idempotency_key=f"test:{tag}")
        # An import that meets the person again (skipped) and a bad row with their values.
        job = imports.import_job_create(
            upload=io.BytesIO(
                ("first_name,email,card_number\n"
                 f"{tag}ina,{values['email']},\n"
                 f"{tag}ina,{tag}-not-an-address,{p['card'][:-1]}0\n").encode()),
            user=admin, source="staff", file_name="people.csv")
        imports.import_job_set_mapping(job=job, mapping=None)
        imports.import_job_start(job=job)
        imports.import_job_run(job.pk)
        # A logged reveal, a request in the register with a note, and the admin's own log.
        person_reveal(person=person, field_key="card_number", user=admin, reason="ticket 42",
                      ip="10.0.0.1")
        rights.rights_request_record(person=person, kind="access", source="staff",
                                     actor=admin, note=f"Called from {p['phone']}")
        request = RequestFactory().post("/")
        request.user = admin
        site._registry[Person].log_change(request, person, "Changed phone.")
        person.refresh_from_db()
        planted[role] = {
            "person": person,
            # Stored in clear somewhere until erasure (the scan must find the kept ones).
            "clear": [values["first_name"], values["last_name"], values["email"], p["phone"],
                      values["company"], f"{tag}nick", f"{tag} question",
                      f"{tag} inbound body", f"Hello {tag}", f"{tag} outbound body",
                      person.national_id_mask, person.card_number_mask,
                      person.national_id_bidx, person.card_number_bidx,
                      person.custom["tax_code"]["mask"]],
            # Never stored in clear, for anyone (sealed or keyed-hashed).
            "never": [p["national_id"], p["card"], p["tax_code"], p["ip"],
                      f"{tag}Browser"],
        }
    # Deliver everything queued, into the local mailbox (a copy of every body and address).
    sender.send_batch(list(EmailMessage.objects.values_list("pk", flat=True)))
    assert MailboxMessage.objects.count() == EmailMessage.objects.count() == 6
    return planted


def test_the_scan_finds_every_planted_value_before_erasure(world):
    for role in ("erased", "kept"):
        for value in world[role]["clear"]:
            assert scan(value), f"{role}: {value!r} not found: the scan cannot see it"
        for value in world[role]["never"]:
            assert scan(value) == [], f"{role}: {value!r} stored in clear"
    # The planting reached every app that keeps personal data in clear.
    tables = {hit.split(".")[0] for value in world["erased"]["clear"] for hit in scan(value)}
    assert {"crm_person", "crm_rightsrequest", "django_admin_log", "campaigns_emailmessage",
            "campaigns_mailboxmessage", "campaigns_inboundmessage"} <= tables


def test_erasure_leaves_none_of_the_persons_values_anywhere(world):
    erased, kept = world["erased"]["person"], world["kept"]["person"]
    events_before = ConsentEvent.objects.filter(person_id=erased.pk).count()

    rights.erasure_request(person=erased, source="portal")
    rights.person_erase(person=erased, source="staff", actor=AdminUserFactory())

    leftovers = {value: hits for value in world["erased"]["clear"] + world["erased"]["never"]
                 if (hits := scan(value))}
    assert leftovers == {}
    for value in world["kept"]["clear"]:
        assert scan(value), f"kept person's {value!r} vanished: erasure went too far"

    # The tombstone stays; the data key is gone (sealed values are unreadable for good).
    tombstone = Person.objects.get(pk=erased.pk)
    assert tombstone.erased_at is not None and tombstone.erasure_requested_at is not None
    assert tombstone.national_id is None and tombstone.card_number is None
    assert "tax_code" not in tombstone.custom and "nickname" not in tombstone.custom
    assert not DataKey.objects.filter(subject_id=erased.pk).exists()
    assert DataKey.objects.filter(subject_id=kept.pk).exists()
    # The address stays suppressed (keyed hash only), so a re-import is never mailed.
    assert SuppressedAddress.objects.filter(
        address_hash=services.address_hash("quillfeather.mail@example.org")).exists()
    # Stored messages are gone; the mail log keeps PII-free rows.
    assert not InboundMessage.objects.filter(person=erased).exists()
    assert not DoubleOptInRequest.objects.filter(person=erased).exists()
    assert EmailMessage.objects.filter(person=erased).exclude(to_address="").count() == 0
    assert EmailMessage.objects.filter(person=erased).count() == 3
    # The consent ledger and the access log are untouched and still verify.
    assert ConsentEvent.objects.filter(person_id=erased.pk).count() == events_before
    assert ledger.verify_all() == []
    call_command("verify_consent_ledger", stdout=io.StringIO())
    assert FieldAccessLog.objects.filter(subject_id=erased.pk).exists()


def test_delete_record_leaves_none_of_the_persons_values_either(world):
    erased = world["erased"]["person"]
    rights.person_delete_record(person=erased, source="staff", actor=AdminUserFactory())
    assert not Person.objects.filter(pk=erased.pk).exists()
    assert {v: h for v in world["erased"]["clear"] if (h := scan(v))} == {}
    assert all(scan(v) for v in world["kept"]["clear"])
    assert ledger.verify_all() == []
