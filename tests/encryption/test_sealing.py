"""encryption.sealing on its own: what the sealing helper hands back, opened by hand."""

import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from config.pgcopy import copy_text
from encryption.cipher import NONCE_BYTES, sealed_header
from encryption.masking import masker
from encryption.sealing import (
    NewKeySealer,
    copy_mask,
    copy_masker,
    copy_str,
    data_key_aad,
    value_aad,
)

MASKS = {"AB12345678": "••••••5678", "4000000000000002": "40" + "•" * 14, "ZZ99": "••99"}
ABSENT = (("\\N", "", ""), ("\\N", "-", "-"))  # per field: its columns' texts without a value


def _bytea(text: str) -> bytes:
    assert text.startswith("\\\\x")  # COPY text of bytea hex input
    return bytes.fromhex(text[3:])


def _copy_read(text: str) -> str:
    """A cell of COPY's text format as PostgreSQL reads it: backslash escapes, octal ones
    giving bytes (NULL and the end marker aside, which a mask never is)."""
    raw, out, i = text.encode(), bytearray(), 0
    while i < len(raw):
        if raw[i] != 0x5C:
            out.append(raw[i])
            i += 1
            continue
        digits = raw[i + 1:i + 4]
        octal = len(digits) - len(digits.lstrip(b"01234567"))
        if octal:
            out.append(int(digits[:octal], 8) & 0xFF)
            i += 1 + octal
        else:
            out += {b"t": b"\t", b"n": b"\n", b"r": b"\r"}.get(raw[i + 1:i + 2], raw[i + 1:i + 2])
            i += 2
    return out.decode()


def _opened(key: bytes, text: str, key_id: str, aad: bytes) -> bytes:
    blob, head = _bytea(text), sealed_header(key_id)
    assert blob.startswith(head)
    nonce = blob[len(head):len(head) + NONCE_BYTES]
    return AESGCM(key).decrypt(nonce, blob[len(head) + NONCE_BYTES:], aad)


def test_helper_rows_open_with_the_master_key_and_keep_the_templates_other_cells():
    master = os.urandom(32)
    sealer = NewKeySealer(master_id="m{1}", master_key=master)
    # A CopyRows.line_template: cells "{}", subject, "a}b", key id, master key id, wrapped key.
    template = "{{}}\t{0}\ta}}b\t{1}\tm{{1}}\t{2}"
    fields = (("crm.person.national_id", "last:4", None),
              ("crm.person.card_number", "first:2", os.urandom(32)))
    subjects = ["s-1", "s-2", "s-3"]
    columns = (["AB12345678", "ZZ99", ""], ["", "4000000000000002", ""])
    lines, joined = sealer.seal_as_text(fields, template, ABSENT, subjects, columns)
    joined = joined.split("\n")  # one string: a line per subject

    rows = [line.split("\t") for line in lines.split("\n")]
    assert [row[1] for row in rows] == ["s-1", "s-2"]  # no data key without a value
    assert joined[2] == "\\N\t\t\t\\N\t-\t-"
    for subject, row, text, values in zip(subjects, rows, joined, zip(*columns, strict=True),
                                          strict=False):
        assert (row[0], row[2], row[4]) == ("{}", "a}b", "m{1}")
        key_id = row[3]
        data_key = _opened(master, row[5], "m{1}", data_key_aad(subject, key_id))
        cells = text.split("\t")
        assert len(cells) == 6
        for (context, _rule, _key), plaintext, at, absent in zip(fields, values, (0, 3), ABSENT,
                                                                strict=True):
            if not plaintext:
                assert tuple(cells[at:at + 3]) == absent
                continue
            assert _opened(data_key, cells[at], key_id, value_aad(context, subject)) == (
                plaintext.encode())
            assert cells[at + 1].isascii() and _copy_read(cells[at + 1]) == MASKS[plaintext]
    assert rows[0][3] != rows[1][3]  # a key of its own per subject
    # A blind-index tag only where the field has an index key.
    assert (joined[0].split("\t")[2], len(joined[1].split("\t")[5])) == ("", 8)


@given(st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from("\\\t\n\r•")))
def test_the_helpers_copy_text_of_a_string_is_the_imports(value):
    assert copy_str(value) == copy_text(value)


@given(st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from("\\\t\n\r•")))
def test_a_mask_in_copy_text_reads_back_as_the_mask(value):
    text = copy_mask(value)
    assert _copy_read(text) == value
    assert not set(text) & {"•", "\t", "\n", "\r"}  # ASCII for the mask, one cell


@given(st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from("\\\t\n\r•")),
       st.sampled_from(["last:4", "first:2", "fixed:8", "full", "last:0"]))
def test_a_mask_made_straight_in_copy_text_is_the_mask_in_copy_text(value, rule):
    assert copy_masker(rule)(value) == copy_mask(masker(rule)(value))


def test_columns_shorter_than_the_subjects_are_refused_not_sealed_as_absent():
    sealer = NewKeySealer(master_id="m1", master_key=os.urandom(32))
    fields = (("crm.person.national_id", "last:4", None),)
    with pytest.raises(ValueError):
        sealer.seal_as_text(fields, "{0}\t{1}\t{2}", (("\\N", "", ""),), ["s-1", "s-2", "s-3"],
                            (["AB1234", ""],))
