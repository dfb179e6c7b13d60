"""Sealing and opening one subject's values with their data key.

`context` names where a value lives (e.g. `crm.person.national_id`, `crm.person.custom.tax_code`)
and is bound into the associated data together with the subject (row) id.
"""

from .cipher import UnknownKey, key_id_of, open_sealed, seal
from .datakeys import data_key, data_keys
from .sealing import value_aad as _aad


def seal_value(plaintext: str, *, subject_id, context: str) -> bytes:
    key_id, key = data_key(subject_id, create=True)
    return seal(plaintext.encode(), key=key, key_id=key_id, aad=_aad(context, subject_id))


def seal_many(items, *, create_keys: bool = True) -> list[bytes]:
    """Seal `(subject_id, context, plaintext)` triples with one key lookup for all subjects."""
    items = list(items)
    keys = data_keys({s for s, _c, _p in items}, create=create_keys)
    out = []
    for subject_id, context, plaintext in items:
        key_id, key = keys[subject_id]
        out.append(seal(plaintext.encode(), key=key, key_id=key_id,
                        aad=_aad(context, subject_id)))
    return out


def open_value(blob: bytes, *, subject_id, context: str) -> str:
    """Decrypt a value. Callers that show it to a person must log the reveal first
    (encryption.services.reveal does both, in that order)."""
    key_id, key = data_key(subject_id, create=False)
    if key_id_of(blob) != key_id:
        raise UnknownKey("The value was sealed under a data key this person no longer has.")
    return open_sealed(blob, key=key, aad=_aad(context, subject_id)).decode()
