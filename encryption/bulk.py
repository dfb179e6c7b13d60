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
from .cipher import NONCE_BYTES, seal_with, sealed_header
from .datakeys import DATA_KEY_BYTES
from .datakeys import _aad as _key_aad
from .keys import keyring
from .masking import masker
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
        self._ciphers: dict = {}  # subject id (text) -> (key id, keyed cipher, sealed header)
        self._indexers: dict = {}
        self._master_header = sealed_header(self._master_id)
        self._keys = CopyRows(DataKey, now=clock.now(), using=keys_db())
        self._add_key = self._keys.adder("subject_id", "key_id", "master_key_id", "wrapped")
        self._random, self._offset = b"", 0

    def seal(self, plaintext: str, *, subject_id, context: str) -> bytes:
        subject = str(subject_id)
        key_id, aead, _header = self._ciphers.get(subject) or self._new_key(subject)
        return seal_with(aead, plaintext.encode(), key_id=key_id,
                         aad=_value_aad(context, subject), nonce=self._take(NONCE_BYTES))

    def field(self, *, context: str, mask_rule: str, indexed: bool = True) -> tuple:
        """One encrypted field, prepared once for `seal_new_subject`: its context, its masker and
        its blind indexer (None when it has no blind index)."""
        indexer = self._indexers.get(context)
        if indexed and indexer is None:
            indexer = self._indexers[context] = blind_indexer(context)
        return (f"{context}:", masker(mask_rule), indexer if indexed else None)

    def seal_new_subject(self, subject: str, values: list) -> list:
        """Seal one new subject's encrypted-field values at once: [(plaintext, field)] with
        fields from `field()` → [(sealed value, mask, blind index)], as EncryptedField stores
        them.

        The same key, layout and associated data as `values.seal_value`, with the per-value
        work cut to the cryptography itself: an import seals two values for each of 100,000
        people.
        """
        _key_id, aead, header = self._ciphers.get(subject) or self._new_key(subject)
        nonces = self._take(NONCE_BYTES * len(values))
        out = []
        for at, (plaintext, (prefix, mask_, indexer)) in enumerate(values):
            nonce = nonces[at * NONCE_BYTES:(at + 1) * NONCE_BYTES]
            blob = header + nonce + aead.encrypt(nonce, plaintext.encode(),
                                                 (prefix + subject).encode())
            out.append((blob, mask_(plaintext), indexer(plaintext) if indexer else ""))
        return out

    def _new_key(self, subject: str):
        # One cut of the randomness for the key, its id and the wrapping nonce.
        random = self._take(DATA_KEY_BYTES + 4 + NONCE_BYTES)
        key, nonce = random[:DATA_KEY_BYTES], random[-NONCE_BYTES:]
        key_id = random[DATA_KEY_BYTES:-NONCE_BYTES].hex()
        wrapped = self._master_header + nonce + self._master.encrypt(
            nonce, key, _key_aad(subject, key_id))
        self._add_key(subject, key_id, self._master_id, wrapped)
        entry = self._ciphers[subject] = (key_id, AESGCM(key), sealed_header(key_id))
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
