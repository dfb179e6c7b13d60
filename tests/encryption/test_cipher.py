import base64

import pytest
from django.core.exceptions import ImproperlyConfigured

from encryption.cipher import DecryptionError, UnknownKey, key_id_of, open_sealed, seal
from encryption.keys import parse_keys

KEY = b"k" * 32
OTHER = b"o" * 32
AAD = b"crm.person.card_number:1234"


def test_round_trip_and_layout():
    blob = seal(b"4111111111111111", key=KEY, key_id="k1", aad=AAD)
    assert blob[0] == 1 and key_id_of(blob) == "k1"
    assert open_sealed(blob, key=KEY, aad=AAD) == b"4111111111111111"
    assert b"4111111111111111" not in blob


def test_same_plaintext_seals_differently_each_time():
    assert seal(b"x", key=KEY, key_id="k1", aad=AAD) != seal(b"x", key=KEY, key_id="k1", aad=AAD)


@pytest.mark.parametrize("aad", [b"crm.person.card_number:9999", b"crm.person.national_id:1234"])
def test_value_moved_to_another_row_or_field_fails(aad):
    blob = seal(b"secret", key=KEY, key_id="k1", aad=AAD)
    with pytest.raises(DecryptionError):
        open_sealed(blob, key=KEY, aad=aad)


def test_wrong_key_fails_clearly():
    blob = seal(b"secret", key=KEY, key_id="k1", aad=AAD)
    with pytest.raises(DecryptionError, match="authentication"):
        open_sealed(blob, key=OTHER, aad=AAD)


@pytest.mark.parametrize("position", [0, 5, 20, -1])
def test_tampered_bytes_are_detected(position):
    blob = bytearray(seal(b"secret value", key=KEY, key_id="k1", aad=AAD))
    blob[position] ^= 0x01
    with pytest.raises(DecryptionError):
        open_sealed(bytes(blob), key=KEY, aad=AAD)


@pytest.mark.parametrize("blob", [b"", b"\x01", b"\x02\x02k1" + b"0" * 40, b"\x01\x02k1short"])
def test_garbage_is_refused_not_decrypted(blob):
    with pytest.raises(DecryptionError):
        open_sealed(blob, key=KEY, aad=AAD)


def test_unknown_key_error_is_a_decryption_error():
    assert issubclass(UnknownKey, DecryptionError)


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (["nokey"], "id:base64key"),
        (["bad id!:" + base64.b64encode(KEY).decode()], "id:base64key"),
        (["k1:not-base64!!"], "base64"),
        (["k1:" + base64.b64encode(b"short").decode()], "32 bytes"),
        (["k1:" + base64.b64encode(KEY).decode()] * 2, "repeats"),
    ],
)
def test_malformed_key_configuration_is_refused_with_a_clear_message(entries, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        parse_keys(entries)
