import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from encryption.blind_index import blind_index
from encryption.checks import check_encryption_keys
from encryption.masking import mask
from encryption.models import DataKey, FieldAccessLog
from encryption.router import KeysRouter


@pytest.mark.parametrize(
    ("value", "rule", "masked"),
    [
        ("4111111111111111", "last:4", "••••••••••••1111"),
        ("AB12", "last:4", "••12"),  # never more than half exposed
        ("RSSMRA85T10A562S", "first:3", "RSS•••••••••••••"),
        ("a long free-text note", "fixed:8", "••••••••"),
        ("x", "fixed:8", "••••••••"),  # length does not leak
        ("anything", "full", "••••••••"),
        ("", "last:4", ""),
    ],
)
def test_mask_rules(value, rule, masked):
    assert mask(value, rule) == masked


@pytest.mark.parametrize("rule", ["last", "last:x", "middle:2", "fixed:-1"])
def test_bad_mask_rule_is_refused(rule):
    with pytest.raises(ValueError):
        mask("value", rule)


def test_an_empty_value_masks_to_empty_whatever_the_rule():
    assert mask("", "bogus") == mask("", "last:4") == ""


def test_blind_index_is_per_field_normalised_and_short():
    card = blind_index("4111 1111 1111 1111", context="crm.person.card_number")
    assert card == blind_index("4111-1111-1111-1111", context="crm.person.card_number")
    assert card != blind_index("4111111111111111", context="crm.person.national_id")
    assert len(card) == 8


def test_missing_keys_fail_the_system_check_when_debug_is_off(settings):
    settings.DEBUG = False
    settings.FIELD_ENCRYPTION_KEYS = []
    settings.BLIND_INDEX_KEY = ""
    errors = check_encryption_keys(None)
    assert errors and errors[0].id == "encryption.E001"
    assert "required when DEBUG is off" in errors[0].msg


def test_malformed_keys_fail_the_system_check(settings):
    settings.FIELD_ENCRYPTION_KEYS = ["k1:" + base64.b64encode(b"short").decode()]
    assert check_encryption_keys(None)[0].id == "encryption.E001"


def test_development_key_file_is_generated_with_a_warning(settings, tmp_path, caplog):
    settings.DEBUG = True
    settings.BASE_DIR = tmp_path
    settings.FIELD_ENCRYPTION_KEYS = []
    settings.BLIND_INDEX_KEY = ""
    warnings = check_encryption_keys(None)
    assert warnings[0].id == "encryption.W001"
    key_file = tmp_path / "var" / "dev-encryption-keys.json"
    assert key_file.exists() and oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert "DEVELOPMENT ENCRYPTION KEYS" in caplog.text


def test_data_keys_route_to_the_keys_database_when_configured(monkeypatch):
    router = KeysRouter()
    assert router.db_for_write(DataKey) == "default"
    monkeypatch.setattr("encryption.router.keys_db", lambda: "keys")
    assert router.db_for_write(DataKey) == "keys"
    assert router.db_for_read(FieldAccessLog) is None
    assert router.allow_migrate("keys", "encryption", "datakey") is True
    assert router.allow_migrate("keys", "crm", "person") is False
    assert router.allow_migrate("default", "encryption", "datakey") is False


@given(key=st.binary(min_size=1, max_size=100), value=st.text(min_size=1, max_size=40))
def test_the_blind_index_tag_is_hmac_sha256_of_the_normalised_value_truncated(key, value):
    import hmac

    from encryption.sealing import TAG_BYTES, blind_tagger, normalise

    expected = hmac.new(key, normalise(value).encode(), "sha256").digest()[:TAG_BYTES].hex()
    assert blind_tagger(key)(value) == expected
