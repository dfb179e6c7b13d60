"""Blind index: exact-match search on full identifiers without decrypting.

HMAC-SHA256 with a key derived per field from BLIND_INDEX_KEY, truncated to 4 bytes on purpose:
a hit is a candidate that the caller re-checks after decryption, and the short tag means a stolen
index cannot confirm a guessed value on its own.
"""

import hmac
import re

from .keys import derive, keyring

TAG_BYTES = 4
_NOISE = re.compile(r"[\s\-./]")


def normalise(value: str) -> str:
    if value and value.isalnum():  # nothing to strip: the usual identifier
        return value.upper()
    return _NOISE.sub("", value or "").upper()


def blind_index(value: str, *, context: str) -> str:
    return blind_indexer(context)(value)


def blind_indexer(context: str):
    """`blind_index` for many values of one field: the field's key is derived once, and the
    HMAC keyed once (each value continues from a copy of the keyed state)."""
    keyed = hmac.new(derive(keyring().blind_index_key, f"blind-index:{context}"),
                     digestmod="sha256")

    def index(value: str) -> str:
        if not value:
            return ""
        mac = keyed.copy()
        mac.update(normalise(value).encode())
        return mac.digest()[:TAG_BYTES].hex()

    return index
