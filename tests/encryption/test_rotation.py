import base64

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from crm.models import Person
from crm.reveal import person_reveal
from encryption.datakeys import master_key_usage
from encryption.models import DataKey
from encryption.values import open_value
from tests.conftest import TEST_KEYS
from tests.factories import AdminUserFactory, PersonFactory

pytestmark = pytest.mark.django_db
NEW_KEY = "t2:" + base64.b64encode(b"2" * 32).decode()


def read(person):
    loaded = Person.objects.get(pk=person.pk)
    return open_value(loaded.card_number.blob, subject_id=person.pk,
                      context="crm.person.card_number")


def test_rotation_rewraps_every_data_key_and_values_stay_readable(settings):
    people = PersonFactory.create_batch(5, card_number="4111111111111111")
    assert set(DataKey.objects.values_list("master_key_id", flat=True)) == {"t1"}
    settings.FIELD_ENCRYPTION_KEYS = [NEW_KEY, *TEST_KEYS]
    # Old and new keys present: old data keys still open before rotation.
    assert read(people[0]) == "4111111111111111"
    call_command("rotate_keys", batch_size=2)
    assert master_key_usage() == {"t2": 5, "t1": 0, "t0": 0}
    # The old key can now be retired: values open with the new key alone.
    settings.FIELD_ENCRYPTION_KEYS = [NEW_KEY]
    assert all(read(p) == "4111111111111111" for p in people)


def test_rotation_resumes_after_an_interruption(settings):
    PersonFactory.create_batch(4, card_number="4111111111111111")
    settings.FIELD_ENCRYPTION_KEYS = [NEW_KEY, *TEST_KEYS]
    from encryption.datakeys import rewrap_batch

    done, after = rewrap_batch(3)  # then "killed"
    assert done == 3 and after is not None
    call_command("rotate_keys")
    assert master_key_usage()["t2"] == 4


def test_rotation_walks_keys_in_subject_order_and_skips_the_rewrapped(settings):
    PersonFactory.create_batch(5, card_number="4111111111111111")
    subjects = sorted(DataKey.objects.values_list("subject_id", flat=True))
    settings.FIELD_ENCRYPTION_KEYS = [NEW_KEY, *TEST_KEYS]
    from encryption.datakeys import rewrap_batch

    assert rewrap_batch(2) == (2, subjects[1])
    assert rewrap_batch(2, after=subjects[1]) == (2, subjects[3])
    # Started again from the beginning (as after a kill): only the key left is re-wrapped.
    assert rewrap_batch(10) == (1, subjects[4])
    assert rewrap_batch(10) == (0, None)
    assert master_key_usage()["t2"] == 5


def test_a_key_made_under_the_old_key_behind_the_cursor_is_taken_by_another_pass(settings):
    import uuid

    from encryption import datakeys

    PersonFactory.create_batch(3, card_number="4111111111111111")
    settings.FIELD_ENCRYPTION_KEYS = [NEW_KEY, *TEST_KEYS]
    real = datakeys.rewrap_batch
    behind = uuid.UUID(int=1)  # before every other subject

    def rewrap_batch(batch_size, *, after=None):
        done, cursor = real(batch_size, after=after)
        if after is None and not DataKey.objects.filter(subject_id=behind).exists():
            # Meanwhile a worker still on the old configuration makes a key.
            settings.FIELD_ENCRYPTION_KEYS = TEST_KEYS
            datakeys.data_key(behind, create=True)
            settings.FIELD_ENCRYPTION_KEYS = [NEW_KEY, *TEST_KEYS]
        return done, cursor

    from encryption import rotation

    rotation.rewrap_batch, saved = rewrap_batch, rotation.rewrap_batch
    try:
        report = rotation.rotate(batch_size=2)
    finally:
        rotation.rewrap_batch = saved
    assert report["rewrapped"] == 4
    assert master_key_usage() == {"t2": 4, "t1": 0, "t0": 0}


def test_removing_a_key_still_in_use_gives_a_clear_error(settings):
    person = PersonFactory(card_number="4111111111111111")
    settings.FIELD_ENCRYPTION_KEYS = [NEW_KEY]
    with pytest.raises(Exception, match="'t1' is not in FIELD_ENCRYPTION_KEYS"):
        read(person)


def test_verify_access_log_command(capsys):
    person = PersonFactory(card_number="4111111111111111")
    person_reveal(person=person, field_key="card_number", user=AdminUserFactory(),
                  reason="audit", ip=None)
    call_command("verify_access_log")
    assert "intact" in capsys.readouterr().out
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("UPDATE encryption_fieldaccesslog SET username = 'someone else'")
    with pytest.raises(CommandError, match="broken"):
        call_command("verify_access_log")


def test_access_log_settings_page_is_searchable_and_admin_only(admin_client_, staff_user):
    from django.test import Client

    person = PersonFactory(card_number="4111111111111111")
    person_reveal(person=person, field_key="card_number", user=AdminUserFactory(username="rita"),
                  reason="refund check", ip="10.1.1.1")
    url = "/admin/encryption/fieldaccesslog/"
    for query in ({"q": "rita"}, {"q": str(person.pk)}, {"field__exact": "card_number"},
                  {"q": "refund"}):
        page = admin_client_.get(url, query)
        assert page.status_code == 200 and b"rita" in page.content, query
    staff = Client()
    staff.force_login(staff_user)
    assert staff.get(url).status_code == 403
