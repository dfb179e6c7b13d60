"""Authenticated encryption of one value: AES-256-GCM with a random 96-bit nonce.

Layout of a sealed value: `format version (1 byte) | key id length (1) | key id | nonce (12) |
ciphertext + tag (16)`. Associated data binds the value to where it lives (model, field, row id),
so a ciphertext copied to another row or field fails to open instead of decrypting elsewhere.
"""

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT_VERSION = 1
NONCE_BYTES = 12


class DecryptionError(Exception):
    """The bytes were tampered with, moved to another row or field, or the key is wrong."""


class UnknownKey(DecryptionError):
    """The value names a key id that is not available."""


def seal(plaintext: bytes, *, key: bytes, key_id: str, aad: bytes) -> bytes:
    return seal_with(AESGCM(key), plaintext, key_id=key_id, aad=aad)


def seal_with(aead: AESGCM, plaintext: bytes, *, key_id: str, aad: bytes,
              nonce: bytes | None = None) -> bytes:
    """`seal` with a cipher object already keyed: bulk sealing reuses one per key (and may pass
    nonces cut from one larger read of the system's randomness)."""
    nonce = nonce or os.urandom(NONCE_BYTES)
    return sealed_header(key_id) + nonce + aead.encrypt(nonce, plaintext, aad)


def sealed_header(key_id: str) -> bytes:
    """The bytes every value sealed under `key_id` starts with: format version and key id."""
    kid = key_id.encode()
    return bytes([FORMAT_VERSION, len(kid)]) + kid


def key_id_of(blob: bytes) -> str:
    blob = bytes(blob)
    if len(blob) < 2 or blob[0] != FORMAT_VERSION:
        raise DecryptionError("Not a sealed value of a known format version.")
    length = blob[1]
    if len(blob) < 2 + length + NONCE_BYTES + 16:
        raise DecryptionError("Sealed value is truncated.")
    return blob[2:2 + length].decode("ascii", errors="replace")


def open_sealed(blob: bytes, *, key: bytes, aad: bytes) -> bytes:
    blob = bytes(blob)
    key_id_of(blob)
    start = 2 + blob[1]
    nonce, body = blob[start:start + NONCE_BYTES], blob[start + NONCE_BYTES:]
    try:
        return AESGCM(key).decrypt(nonce, body, aad)
    except InvalidTag:
        raise DecryptionError(
            "Sealed value failed authentication (tampered, moved, or wrong key)."
        ) from None
