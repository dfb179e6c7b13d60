"""Blind index: exact-match search on full identifiers without decrypting.

HMAC-SHA256 with a key derived per field from BLIND_INDEX_KEY, truncated to 4 bytes on purpose:
a hit is a candidate that the caller re-checks after decryption, and the short tag means a stolen
index cannot confirm a guessed value on its own. The tag itself is `sealing.blind_tagger`'s.
"""

from .keys import derive, keyring
from .sealing import blind_tagger, normalise  # noqa: F401 - normalise is this module's API too


def blind_index(value: str, *, context: str) -> str:
    return blind_indexer(context)(value)


def field_key(context: str) -> bytes:
    """The blind-index key of one field (derived, so a field's index says nothing of another's)."""
    return derive(keyring().blind_index_key, f"blind-index:{context}")


def blind_indexer(context: str):
    """`blind_index` for many values of one field: the field's key is derived once, and the
    HMAC keyed once."""
    return blind_tagger(field_key(context))
