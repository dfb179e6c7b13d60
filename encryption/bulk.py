"""Sealing values of many *new* subjects at once (imports).

`values.seal_value` looks up (or creates) the subject's data key for every value: right for one
record, a query per row for an import. Here the data keys of subjects that have none yet are
generated and wrapped in memory, each cipher is keyed once, and the key rows are written in one
COPY by `save_keys()` — the same key format, wrapping and sealed-value layout as `datakeys` and
`values`, through their own helpers.
"""

import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from config import clock
from config.pgcopy import CopyRows

from .blind_index import blind_indexer
from .cipher import FORMAT_VERSION, NONCE_BYTES, seal_with
from .datakeys import DATA_KEY_BYTES
from .datakeys import _aad as _key_aad
from .keys import keyring
from .masking import mask
from .models import DataKey
from .router import keys_db
from .values import _aad as _value_aad


class NewSubjectSealer:
    """Seals values for subjects that are being created now and so have no data key yet.

    Call `save_keys()` before the rows holding the sealed values commit (in the same transaction
    when the keys live in the main database): a sealed value whose key was never stored cannot be
    opened. Not for existing subjects — their key already exists and would be shadowed.
    """

    def __init__(self):
        ring = keyring()
        self._master_id = ring.primary_id
        self._master = AESGCM(ring.primary)
        self._ciphers: dict = {}  # subject id (text) -> (key id, keyed cipher)
        self._indexers: dict = {}
        self._keys = CopyRows(DataKey, now=clock.now(), using=keys_db())
        self._random, self._offset = b"", 0

    def seal(self, plaintext: str, *, subject_id, context: str) -> bytes:
        subject = str(subject_id)
        entry = self._ciphers.get(subject)
        if entry is None:
            entry = self._new_key(subject)
        key_id, aead = entry
        return seal_with(aead, plaintext.encode(), key_id=key_id,
                         aad=_value_aad(context, subject), nonce=self._take(NONCE_BYTES))

    def sealed_field(self, value: str, *, subject_id, context: str, mask_rule: str,
                     indexed: bool = True) -> tuple[bytes, str, str]:
        """(sealed value, mask, blind index) of one encrypted-field value, as EncryptedField
        stores them."""
        indexer = self._indexers.get(context)
        if indexer is None:
            indexer = self._indexers[context] = blind_indexer(context)
        return (self.seal(value, subject_id=subject_id, context=context), mask(value, mask_rule),
                indexer(value) if indexed else "")

    def seal_new_subject(self, subject: str, values: list) -> list:
        """Seal one new subject's encrypted-field values at once: [(plaintext, context,
        mask_rule, indexer)] → [(sealed value, mask, blind index)].

        The same key, layout and associated data as `sealed_field`, with the per-value work cut
        to the cryptography itself: an import seals two values for each of 100,000 people.
        """
        key_id, aead = self._ciphers.get(subject) or self._new_key(subject)
        header = bytes([FORMAT_VERSION, len(key_id)]) + key_id.encode()
        out = []
        for plaintext, context, mask_rule, indexer in values:
            nonce = self._take(NONCE_BYTES)
            blob = header + nonce + aead.encrypt(
                nonce, plaintext.encode(), f"{context}:{subject}".encode())
            out.append((blob, mask(plaintext, mask_rule), indexer(plaintext)))
        return out

    def indexer(self, context: str):
        indexer = self._indexers.get(context)
        if indexer is None:
            indexer = self._indexers[context] = blind_indexer(context)
        return indexer

    def _new_key(self, subject: str):
        key, key_id = self._take(DATA_KEY_BYTES), self._take(4).hex()
        wrapped = seal_with(self._master, key, key_id=self._master_id,
                            aad=_key_aad(subject, key_id), nonce=self._take(NONCE_BYTES))
        self._keys.add({"subject_id": subject, "key_id": key_id,
                        "master_key_id": self._master_id, "wrapped": wrapped})
        entry = self._ciphers[subject] = (key_id, AESGCM(key))
        return entry

    def _take(self, size: int) -> bytes:
        """Fresh random bytes, cut from one system read per ~64 KiB (a read per value costs as
        much as the encryption)."""
        start = self._offset
        if start + size > len(self._random):
            self._random, start = os.urandom(1 << 16), 0
        self._offset = start + size
        return self._random[start:self._offset]

    def save_keys(self) -> int:
        """Write the data keys generated so far (one COPY); returns how many."""
        return self._keys.write()
