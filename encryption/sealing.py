"""Sealing many new subjects' values: the cryptography alone, no Django.

A new subject (a person being created) gets a fresh data key, wrapped by the master key, and
each of their sensitive values is sealed under it with its mask and blind-index tag — the same
key format, wrapping and sealed-value layout as `datakeys` and `values`, whose associated data
is defined here. `bulk.NewSubjectSealer` runs this in its own process or, through
`python -m encryption.sealing`, in a helper process of the import (see `bulk.SealingHelper`):
it needs keys, never the database.
"""

import os
import pickle
import re
import struct
import sys

try:  # CPython's own SHA-256: for one-block messages twice as fast as OpenSSL's through EVP
    from _sha256 import sha256
except ImportError:  # another Python: hashlib's (OpenSSL) gives the same bytes
    from hashlib import sha256

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .cipher import FORMAT_VERSION, NONCE_BYTES, sealed_header
from .masking import MASK_CHAR, masker

DATA_KEY_BYTES = 32
KEY_ID_BYTES = 4
TAG_BYTES = 4
# A new data key's random bytes: the key, its id, the nonce that wraps it.
_KEY_ID_END = DATA_KEY_BYTES + KEY_ID_BYTES
_KEY_RANDOM = _KEY_ID_END + NONCE_BYTES


def data_key_aad(subject_id, key_id: str) -> bytes:
    """What a wrapped data key is bound to: its subject and its id."""
    return f"datakey:{subject_id}:{key_id}".encode()


def value_aad(context: str, subject_id) -> bytes:
    """What a sealed value is bound to: where it lives (model and field) and its row. The row
    comes last, so `value_aad(context, "")` begins every value's of that field (the sealers
    join it with each subject)."""
    return f"{context}:{subject_id}".encode()


def normalise(value: str) -> str:
    """An identifier as its blind index sees it: separators dropped, upper case."""
    if value and value.isalnum():  # nothing to strip: the usual identifier
        return value.upper()
    return _NOISE.sub("", value or "").upper()


_NOISE = re.compile(r"[\s\-./]")


def copy_str(value: str) -> str:
    """A string in COPY's text format: backslash, tab, newline and CR escaped. The same as
    `config.pgcopy.copy_text` for a string (a property test holds them equal), here so that
    the helper process imports no Django, nor the Celery app that `config` starts (a quarter
    of a second and ~10 MiB a helper)."""
    if value.isprintable() and "\\" not in value:
        return value
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace(
        "\r", "\\r")


def copy_mask(value: str) -> str:
    """A mask in COPY's text format, in ASCII: `copy_str`, with each mask character written as
    the octal escapes of its UTF-8 bytes, which COPY reads back as the character. One non-ASCII
    character makes Python keep a whole string at two bytes a character — the reply that holds
    it, the COPY row it is joined into, then each step that re-encodes them; a sealed row has
    two masks."""
    text = value if value.isprintable() and "\\" not in value else copy_str(value)
    return text.replace(MASK_CHAR, _MASK_ESCAPED)


_MASK_ESCAPED = "".join(f"\\{byte:03o}" for byte in MASK_CHAR.encode())


def copy_masker(rule: str):
    """`copy_mask(masker(rule)(value))` in one step: the hidden characters made as their
    escapes, the value's exposed ones escaped only if they need it (a property test holds
    the two equal)."""
    plain, escaped = masker(rule), masker(rule, _MASK_ESCAPED)

    def mask_(value: str) -> str:
        if value.isascii() and value.isprintable() and "\\" not in value:  # the usual value:
            return escaped(value)  # nothing to escape
        return copy_mask(plain(value))

    return mask_


def blind_tagger(key: bytes):
    """The blind-index tag of a value under one field's key: HMAC-SHA256 (RFC 2104), truncated.

    The two keyed hash states (key XOR ipad, key XOR opad) are made once and each value
    continues from copies of them: the same bytes as `hmac.new(key, value, "sha256")` (tested),
    at a third of the cost of copying an `hmac.HMAC` per value (an import tags two values a
    person).
    """
    if len(key) > _SHA256_BLOCK:
        key = sha256(key).digest()
    key = key.ljust(_SHA256_BLOCK, b"\0")
    inner = sha256(bytes(b ^ 0x36 for b in key))
    outer = sha256(bytes(b ^ 0x5C for b in key))

    def tag(value: str) -> str:
        if not value:
            return ""
        mac = inner.copy()
        # `normalise`, inline: the usual identifier has nothing to strip
        mac.update((value.upper() if value.isalnum() else normalise(value)).encode())
        digest = outer.copy()
        digest.update(mac.digest())
        return digest.digest()[:TAG_BYTES].hex()

    return tag


_SHA256_BLOCK = 64


class NewKeySealer:
    """Data keys for new subjects and their values sealed under them.

    `fields` are (context, mask rule, blind-index key or None) per encrypted field; a subject's
    values name their field by its position in that list. `prepare` makes each field's
    (`value_aad` up to the subject, masker, masker to COPY text, blind tagger or None).
    """

    def __init__(self, *, master_id: str, master_key: bytes):
        self.master_id = master_id
        self._master = AESGCM(master_key)
        self._master_header = sealed_header(master_id)
        self._fields: dict = {}  # fields spec (tuple) -> prepared fields
        self._random, self._offset = b"", 0

    def prepare(self, fields: tuple) -> list:
        prepared = self._fields.get(fields)
        if prepared is None:
            prepared = self._fields[fields] = [
                (value_aad(context, ""), masker(rule), copy_masker(rule),
                 blind_tagger(key) if key else None)
                for context, rule, key in fields
            ]
        return prepared

    def new_key(self, subject: str) -> tuple:
        """(key id, wrapped key, keyed cipher, sealed-value header) of a fresh data key."""
        random = self.take(DATA_KEY_BYTES + KEY_ID_BYTES + NONCE_BYTES)
        key, nonce = random[:DATA_KEY_BYTES], random[-NONCE_BYTES:]
        key_id = random[DATA_KEY_BYTES:-NONCE_BYTES].hex()
        wrapped = self._master_header + nonce + self._master.encrypt(
            nonce, key, data_key_aad(subject, key_id))
        return key_id, wrapped, AESGCM(key), sealed_header(key_id)

    def seal(self, aead, header: bytes, subject: str, values: list, prepared: list) -> list:
        """[(field position, plaintext)] of one subject → [(sealed value, mask, blind index)].
        The per-value work is cut to the cryptography itself: an import seals two values for
        each of 100,000 people."""
        nonces = self.take(NONCE_BYTES * len(values))
        out = []
        for at, (position, plaintext) in enumerate(values):
            prefix, mask_, _copy_mask, tagger = prepared[position]
            nonce = nonces[at * NONCE_BYTES:(at + 1) * NONCE_BYTES]
            blob = header + nonce + aead.encrypt(nonce, plaintext.encode(),
                                                 prefix + subject.encode())
            out.append((blob, mask_(plaintext), tagger(plaintext) if tagger else ""))
        return out

    def seal_as_text(self, fields: tuple, key_line: str, absent: tuple, subjects: list,
                     columns: tuple) -> tuple:
        """Seal the values of new subjects, each subject with any under a fresh data key,
        straight to COPY's text format.

        `columns` holds one list per field, aligned with `subjects`: the plaintext, or "" for
        none. → (the data-key rows, one per line, each `key_line` (a `CopyRows.line_template`)
        filled with the texts of subject, key id and wrapped key; per subject one line: for
        each field the texts of (sealed value, mask, blind index), or the field's `absent`
        texts where it has no value, all joined by tabs — a slot of `CopyRows.join`). Both are
        one string: one object to pass between processes instead of one a subject.

        The same keys, wrapping and values as `new_key` and `seal`, done a column at a time:
        this is the sealing helper's whole work, ~2 µs of cryptography per value, which the
        calls and tuples around it had tripled."""
        if any(len(column) != len(subjects) for column in columns):
            raise ValueError("Each field's column needs a value (or \"\") per subject.")
        keyed = [at for at, values in enumerate(zip(*columns, strict=True)) if any(values)]
        if len(keyed) < len(subjects):  # those without a value get no key
            names = [subjects[at] for at in keyed]
            columns = [[column[at] for at in keyed] for column in columns]
        else:
            names = subjects
        # One read of the system's randomness for the whole request: per subject its key, key
        # id, wrapping nonce and a nonce per field.
        width = _KEY_RANDOM + NONCE_BYTES * len(fields)
        pool = os.urandom(width * len(names))
        starts = range(0, len(pool), width)
        keys = [pool[start:start + DATA_KEY_BYTES] for start in starts]
        key_ids = [pool[start + DATA_KEY_BYTES:start + _KEY_ID_END].hex() for start in starts]
        wrap, master_header = self._master.encrypt, self._master_header
        wrapped = [
            "\\\\x" + (master_header + nonce + wrap(
                nonce, key, data_key_aad(name, key_id))).hex()
            for nonce, key, name, key_id in zip(
                [pool[start + _KEY_ID_END:start + _KEY_RANDOM] for start in starts], keys, names,
                key_ids, strict=True)
        ]
        lines = "\n".join(map(key_line.format, map(copy_str, names), key_ids, wrapped))
        encrypts = [AESGCM(key).encrypt for key in keys]
        # Every data key's id has the same length, so its values' header is this and the id.
        head = bytes([FORMAT_VERSION, 2 * KEY_ID_BYTES])
        headers = [head + key_id.encode() for key_id in key_ids]
        bound = [name.encode() for name in names]
        cells = []
        for position, ((prefix, _mask, mask_, tagger), column, (none, no_mask, no_tag)) in \
                enumerate(zip(self.prepare(fields), columns, absent, strict=True)):
            at = _KEY_RANDOM + NONCE_BYTES * position
            cells.append([
                "\\\\x" + (header + nonce + encrypt(nonce, value.encode(), prefix + name)).hex()
                if value else none
                for encrypt, header, nonce, value, name in zip(
                    encrypts, headers, [pool[start + at:start + at + NONCE_BYTES]
                                        for start in starts], column, bound, strict=True)
            ])
            cells.append([mask_(value) if value else no_mask for value in column])
            cells.append([tagger(value) if value else no_tag for value in column] if tagger
                         else ["" if value else no_tag for value in column])
        texts = list(map("\t".join, zip(*cells, strict=True)))
        if len(keyed) < len(subjects):
            joined = ["\t".join(cell for field in absent for cell in field)] * len(subjects)
            for at, text in zip(keyed, texts, strict=True):
                joined[at] = text
            texts = joined
        return lines, "\n".join(texts)

    def take(self, size: int) -> bytes:
        """Fresh random bytes, cut from one system read per ~64 KiB (a read per value costs as
        much as the encryption)."""
        start = self._offset
        if start + size > len(self._random):
            self._random, start = os.urandom(1 << 16), 0
        self._offset = start + size
        return self._random[start:self._offset]


# -- the helper process: frames of pickled requests on stdin, replies on stdout ---------------

FRAME_HEAD = struct.Struct(">I")  # a frame: its length, then the pickled payload


def frame(payload) -> bytes:
    data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    return FRAME_HEAD.pack(len(data)) + data


def unframe(data: bytes):
    """A frame's payload from its body (the bytes after the head)."""
    return pickle.loads(data)  # noqa: S301 - frames pass only between an import and its helper


def write_frame(stream, payload) -> None:
    stream.write(frame(payload))
    stream.flush()


def read_frame(stream):
    """The next frame's payload; EOFError when the other side has closed."""
    head = stream.read(FRAME_HEAD.size)
    if len(head) < FRAME_HEAD.size:
        raise EOFError
    (size,) = FRAME_HEAD.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return unframe(data)


def serve(requests, replies) -> None:
    """The helper's loop: a first frame (master key id, master key), then one reply per request
    (the arguments of `NewKeySealer.seal_as_text`) until the parent closes the pipe."""
    master_id, master_key = read_frame(requests)
    sealer = NewKeySealer(master_id=master_id, master_key=master_key)
    while True:
        try:
            request = read_frame(requests)
        except EOFError:
            return
        write_frame(replies, sealer.seal_as_text(*request))


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
    # Every reply is flushed; skip the interpreter's teardown of a run's worth of freed memory
    # (~15 ms), which the import waits for when it closes the helper.
    os._exit(0)
