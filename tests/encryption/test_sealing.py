"""encryption.sealing on its own: what the sealing helper hands back, opened by hand."""

import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from config.pgcopy import copy_text
from encryption.cipher import NONCE_BYTES, sealed_header
from encryption.sealing import NewKeySealer, data_key_aad, value_aad


def _bytea(text: str) -> bytes:
    assert text.startswith("\\\\x")  # COPY text of bytea hex input
    return bytes.fromhex(text[3:])


MASKS = {"AB12345678": "••••••5678", "4000000000000002": "40" + "•" * 14, "ZZ99": "••99"}


def test_helper_rows_open_with_the_master_key_and_keep_the_templates_other_cells():
    master = os.urandom(32)
    sealer = NewKeySealer(master_id="m{1}", master_key=master)
    template = ["{}", "\\N", "a}b", "x", "y", "z"]  # braces: the row is built by str.format
    fields = (("crm.person.national_id", "last:4", None), ("crm.person.card_number", "first:2",
                                                          os.urandom(32)))
    subjects = [("s-1", [(0, "AB12345678")]), ("s-2", [(1, "4000000000000002"),
                                                      (0, "ZZ99")])]
    lines, texts = sealer.seal_as_text(fields, (template, (1, 3, 4, 5)), subjects, copy_text)

    rows = [line.split("\t") for line in lines.split("\n")]
    assert len(rows) == 2
    for (subject, values), row, flat in zip(subjects, rows, texts, strict=True):
        assert (row[0], row[1], row[2], row[4]) == ("{}", subject, "a}b", "m{1}")
        key_id, wrapped = row[3], _bytea(row[5])
        head = sealed_header("m{1}")
        assert wrapped.startswith(head)
        nonce = wrapped[len(head):len(head) + NONCE_BYTES]
        data_key = AESGCM(master).decrypt(nonce, wrapped[len(head) + NONCE_BYTES:],
                                          data_key_aad(subject, key_id))
        assert len(flat) == 3 * len(values)
        for (position, plaintext), at in zip(values, range(0, len(flat), 3), strict=True):
            blob = _bytea(flat[at])
            head = sealed_header(key_id)
            nonce = blob[len(head):len(head) + NONCE_BYTES]
            context = fields[position][0]
            assert AESGCM(data_key).decrypt(nonce, blob[len(head) + NONCE_BYTES:],
                                            value_aad(context, subject)).decode() == plaintext
            assert flat[at + 1] == MASKS[plaintext]
    assert rows[0][3] != rows[1][3]  # a key of its own per subject
    # A blind-index tag only where the field has an index key.
    assert (texts[0][2], len(texts[1][2]), texts[1][5]) == ("", 8, "")
