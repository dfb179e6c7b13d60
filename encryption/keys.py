"""Master keys and the blind-index key, read from settings (never derived from SECRET_KEY).

FIELD_ENCRYPTION_KEYS is a list of `id:base64key` (32-byte keys); the first one encrypts (wraps
new data keys), the others only decrypt until rotation has moved everything off them.
In development with no keys configured, a key file is generated under var/ with a loud warning.
"""

import base64
import binascii
import json
import logging
import os
import re
import secrets
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)
KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
KEY_BYTES = 32


@dataclass(frozen=True)
class KeyRing:
    keys: dict  # id -> bytes, in configured order
    primary_id: str
    blind_index_key: bytes
    development: bool = False

    def get(self, key_id: str) -> bytes:
        from .cipher import UnknownKey

        try:
            return self.keys[key_id]
        except KeyError:
            raise UnknownKey(f"Master key {key_id!r} is not in FIELD_ENCRYPTION_KEYS.") from None

    @property
    def primary(self) -> bytes:
        return self.keys[self.primary_id]


def _decode_key(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ImproperlyConfigured(f"{what} is not valid base64.") from None
    if len(raw) != KEY_BYTES:
        raise ImproperlyConfigured(f"{what} must decode to {KEY_BYTES} bytes, not {len(raw)}.")
    return raw


def parse_keys(entries) -> dict:
    """Parse `id:base64key` entries; raise ImproperlyConfigured with a clear message."""
    keys: dict = {}
    for entry in entries:
        key_id, sep, encoded = str(entry).strip().partition(":")
        if not sep or not KEY_ID.match(key_id):
            raise ImproperlyConfigured(
                "FIELD_ENCRYPTION_KEYS entries look like `id:base64key` with an id of letters, "
                "digits, '-' or '_' (at most 32)."
            )
        if key_id in keys:
            raise ImproperlyConfigured(f"FIELD_ENCRYPTION_KEYS repeats the key id {key_id!r}.")
        keys[key_id] = _decode_key(encoded, f"FIELD_ENCRYPTION_KEYS key {key_id!r}")
    return keys


def generate_key() -> str:
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def _dev_key_file() -> Path:
    return Path(settings.BASE_DIR) / "var" / "dev-encryption-keys.json"


def _development_keys() -> tuple[list, str]:
    path = _dev_key_file()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"FIELD_ENCRYPTION_KEYS": [f"dev1:{generate_key()}"],
                "BLIND_INDEX_KEY": generate_key()}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
    data = json.loads(path.read_text())
    logger.warning(
        "DEVELOPMENT ENCRYPTION KEYS in use (%s). Set FIELD_ENCRYPTION_KEYS and BLIND_INDEX_KEY "
        "before storing real data: losing that file makes encrypted values unreadable.", path,
    )
    return data["FIELD_ENCRYPTION_KEYS"], data["BLIND_INDEX_KEY"]


def keyring() -> KeyRing:
    """The key ring for the current settings (cached per distinct configuration)."""
    return _keyring(tuple(settings.FIELD_ENCRYPTION_KEYS), settings.BLIND_INDEX_KEY,
                    settings.DEBUG)


@lru_cache(maxsize=8)
def _keyring(entries: tuple, blind_index_key: str, debug: bool) -> KeyRing:
    development = False
    if not entries and not blind_index_key:
        if not debug:
            raise ImproperlyConfigured(
                "FIELD_ENCRYPTION_KEYS and BLIND_INDEX_KEY are required when DEBUG is off."
            )
        entries, blind_index_key = _development_keys()
        development = True
    if not entries:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS is empty.")
    if not blind_index_key:
        raise ImproperlyConfigured("BLIND_INDEX_KEY is empty.")
    keys = parse_keys(entries)
    return KeyRing(
        keys=keys, primary_id=next(iter(keys)),
        blind_index_key=_decode_key(blind_index_key, "BLIND_INDEX_KEY"),
        development=development,
    )


@lru_cache(maxsize=256)
def derive(key: bytes, purpose: str, length: int = 32) -> bytes:
    """A sub-key for one purpose (a field's blind index, the access-log chain)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None,
                info=purpose.encode()).derive(key)
