"""A database dump (a backup, a copy handed to a contractor) holds no sensitive value in clear.

Written through the real services and committed, then dumped with `pg_dump` exactly as an
operator would, and searched for the values as text, as hex (bytea's dump form) and as base64
(how sealed custom values sit in the JSON column).
"""

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from crm import services
from crm.models import FieldDefinition

NATIONAL_ID = "RSSMRA85T10A562S"
CARD_TYPED = "4000 0566 5566 5556"
CARD = "4000056655665556"
CUSTOM_KEY = "passport_number"
CUSTOM_VALUE = "YA7719QX04"
# Not sensitive, and unusual enough that finding it proves the dump holds the person's row.
LAST_NAME = "Quagliarulo-Brendolan"


def _pg_dump() -> str:
    """The pg_dump of the server's major version (an older client refuses a newer server)."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version_num")
        major = int(cursor.fetchone()[0]) // 10_000
    candidates = [f"/usr/lib/postgresql/{major}/bin/pg_dump", shutil.which("pg_dump") or ""]
    for path in filter(None, candidates):
        if not Path(path).exists():
            continue
        found = re.search(r"(\d+)", subprocess.run(
            [path, "--version"], capture_output=True, text=True, check=True).stdout)
        if found and int(found.group(1)) >= major:
            return path
    reason = f"no pg_dump for PostgreSQL {major} (apt-get install postgresql-client-{major})"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run this test, never skip it.")
    pytest.skip(reason)


def _encodings(value: str) -> dict[str, str]:
    """Forms in which a value could sit in a dump if it were stored in clear somewhere."""
    raw = value.encode()
    forms = {"text": value, "hex": raw.hex()}
    # Base64 of a value inside a longer blob depends on its offset modulo 3: check each
    # alignment, keeping only the characters that encode the value's own bytes.
    for offset in range(3):
        for name, encode in (("base64", base64.b64encode), ("urlsafe", base64.urlsafe_b64encode)):
            encoded = encode(b"\0" * offset + raw).decode()
            forms[f"{name}+{offset}"] = encoded[4:-4]
    return forms


@pytest.mark.django_db(transaction=True)
def test_sensitive_values_never_appear_in_a_database_dump(tmp_path):
    services.field_definition_save(definition=FieldDefinition(
        key=CUSTOM_KEY, label="Passport number", is_encrypted=True, mask_rule="last:2",
    ))
    person = services.person_create(
        data={"kind": "contact", "first_name": "Ottone", "last_name": LAST_NAME,
              "email": "ottone.qb@example.org", "national_id": NATIONAL_ID,
              "card_number": CARD_TYPED, "custom": {CUSTOM_KEY: CUSTOM_VALUE}},
        actor=None, source=services.Source.STAFF,
    )
    # The values went in and can come out (so their absence below is not a failed write).
    assert str(person.card_number) == "•" * 12 + "5556"
    assert person.custom[CUSTOM_KEY]["mask"] == "•" * 8 + "04"

    db = settings.DATABASES["default"]
    assert db["NAME"].startswith("test_"), "dump the test database only"
    dump_file = tmp_path / "consenso.sql"
    env = {**os.environ, "PGPASSWORD": str(db.get("PASSWORD") or "")}
    command = [_pg_dump(), "--no-owner", "--file", str(dump_file), "--dbname", db["NAME"]]
    for option, key in (("--host", "HOST"), ("--port", "PORT"), ("--username", "USER")):
        if db.get(key):
            command += [option, str(db[key])]
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=120)
    dump = dump_file.read_text(encoding="utf-8")

    assert LAST_NAME in dump
    assert "•" * 12 + "5556" in dump  # the stored mask: the sensitive columns were dumped
    # Text and hex in any case (a lower-cased copy is still the value); base64 is case-exact.
    folded = dump.lower()
    leaks = [
        (value, form)
        for value in (NATIONAL_ID, CARD, CARD_TYPED, CUSTOM_VALUE)
        for form, encoded in _encodings(value).items()
        if (encoded in dump if form.startswith(("base64", "urlsafe"))
            else encoded.lower() in folded)
    ]
    assert not leaks, f"in clear in the dump (value, form): {leaks}"
