"""Sealing values of many *new* subjects at once (imports).

`values.seal_value` looks up (or creates) the subject's data key for every value: right for one
record, a query per row for an import. Here the data keys of subjects that have none yet are
generated and wrapped in memory, each cipher is keyed once, and the key rows are written in one
COPY by `save_keys()` — the same key format, wrapping and sealed-value layout as `datakeys` and
`values` (the cryptography is `sealing`'s). A `SealingHelper` process can do a chunk's sealing
while the import goes on with the rest of the chunk.
"""

import contextlib
import fcntl
import logging
import os
import pickle
import select
import subprocess
import sys
import time

from django.conf import settings

from config import clock
from config.pgcopy import CopyRows, copy_text

from .blind_index import field_key
from .cipher import NONCE_BYTES, DecryptionError, key_id_of, open_sealed
from .keys import keyring
from .models import DataKey
from .router import keys_db
from .sealing import (
    FRAME_HEAD,
    NewKeySealer,
    copy_str,
    data_key_aad,
    frame,
    unframe,
    value_aad,
)

logger = logging.getLogger(__name__)
_NO_VALUE = (None, "", "")  # an encrypted field without a value: its value, mask, blind index


def _bytea(text: str) -> bytes:
    """The bytes of a bytea in COPY's text format (hex input, its backslash escaped)."""
    if not text.startswith("\\\\x"):
        raise ValueError("Not a bytea in COPY's text format.")
    return bytes.fromhex(text[3:])


class SealingHelperError(Exception):
    """The helper process is gone or answered nonsense; the caller seals in its own process."""


class SealingHelper:
    """A process (`python -m encryption.sealing`) that seals new subjects' values for an import.

    On a machine with a second core the import's own process, which parses, validates and
    builds a chunk's rows, then no longer also pays for the cryptography of every person in it.
    The helper starts with an environment of its own (no key, no database address), gets the
    primary master key once over its stdin and each field's blind-index key with the requests,
    and never sees the database. One request is in the pipe at a time: a new one first collects
    the answer to the last (into its `Sealed`), so a caller may send chunk k+1 before it needs
    chunk k's answer. A helper silent for `TIMEOUT` seconds counts as dead. Close it (or use it
    as a context manager) when the import ends.
    """

    TIMEOUT = 60.0
    STOP_WAIT = 5.0  # seconds a closed helper has to exit before it is killed

    def __init__(self):
        ring = keyring()
        self.master_id = ring.primary_id
        self._process = subprocess.Popen(
            [sys.executable, "-m", "encryption.sealing"], cwd=settings.BASE_DIR, bufsize=0,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True,
            env={name: os.environ[name] for name in _HELPER_ENVIRONMENT if name in os.environ},
        )
        os.set_blocking(self._process.stdin.fileno(), False)  # writes wait in `_wait` only
        for pipe in (self._process.stdin, self._process.stdout):
            _widen(pipe)
        self._outstanding = None  # the Sealed whose answer is still in the pipe
        try:
            self._send((ring.primary_id, ring.primary))
        except SealingHelperError:
            self.close()
            raise

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    def submit(self, request: tuple, *, answer) -> None:
        """Send a request (the arguments of `NewKeySealer.seal_as_text`); its answer goes to
        `answer` (a `Sealed`), read when it asks or when the next request is sent."""
        if self._outstanding is not None:
            self._outstanding.result()
        self._send(request)
        self._outstanding = answer

    def result(self) -> list:
        self._outstanding = None
        (size,) = FRAME_HEAD.unpack(self._receive(FRAME_HEAD.size))
        try:
            return unframe(self._receive(size))
        except SealingHelperError:
            raise
        except Exception:  # a garbled answer: an unpickling error of any kind
            raise SealingHelperError("The sealing helper answered nonsense.") from None

    def _send(self, payload) -> None:
        try:
            data = memoryview(frame(payload))
            deadline = time.monotonic() + self.TIMEOUT
            while data:
                self._wait(self._process.stdin, deadline, writing=True)
                data = data[self._process.stdin.write(data) or 0:]  # None: the pipe is full
        except (OSError, ValueError, pickle.PickleError):  # gone, closed, unpicklable
            raise SealingHelperError("The sealing helper stopped.") from None

    def _receive(self, size: int) -> bytes:
        parts, deadline = [], time.monotonic() + self.TIMEOUT
        try:
            while size:
                self._wait(self._process.stdout, deadline)
                part = self._process.stdout.read(min(size, 1 << 20))
                if not part:
                    raise SealingHelperError("The sealing helper stopped.")
                parts.append(part)
                size -= len(part)
        except (OSError, ValueError):
            raise SealingHelperError("The sealing helper stopped.") from None
        return b"".join(parts)

    def _wait(self, stream, deadline: float, *, writing: bool = False) -> None:
        left = deadline - time.monotonic()
        ready = select.select([], [stream], [], max(left, 0))[1] if writing \
            else select.select([stream], [], [], max(left, 0))[0]
        if not ready:
            raise SealingHelperError("The sealing helper did not answer in time.")

    def close(self) -> None:
        """End the helper: its stdin closed, it exits; one that does not is killed."""
        for stream in (self._process.stdin, self._process.stdout):
            with contextlib.suppress(OSError):
                stream.close()
        try:
            self._process.wait(timeout=self.STOP_WAIT)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _widen(pipe) -> None:
    """Give a pipe a buffer of up to `PIPE_BYTES` (Linux): an answer of ~3 MB then crosses in
    a few reads instead of one per 64 KiB, each a wake-up of both processes."""
    with contextlib.suppress(AttributeError, OSError):  # elsewhere, or above the system's cap
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)


PIPE_BYTES = 1 << 20  # Linux's default cap for an unprivileged process (fs.pipe-max-size)

# What the helper's environment keeps of ours: enough to find Python and read text as we do.
_HELPER_ENVIRONMENT = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "PYTHONPATH", "VIRTUAL_ENV")


class NewSubjectSealer:
    """Seals values for subjects that are being created now and so have no data key yet.

    Call `save_keys()` — after collecting every `Sealed` — so that the keys commit before the
    rows holding the sealed values, or with them: a sealed value whose key was never stored
    cannot be opened, while a key whose rows never commit seals nothing. Not for existing
    subjects — their key already exists and would be shadowed.
    """

    def __init__(self, *, helper: SealingHelper | None = None):
        ring = keyring()
        self._master_id, self._master_key = ring.primary_id, ring.primary
        self._core = NewKeySealer(master_id=ring.primary_id, master_key=ring.primary)
        self._helper = helper if helper is not None and helper.alive \
            and helper.master_id == ring.primary_id else None
        self._ciphers: dict = {}  # subject id (text) -> (key id, keyed cipher, sealed header)
        self._elsewhere: set = set()  # subjects sent to the helper: any key is made there
        self._fields: list = []
        self._keys = CopyRows(DataKey, now=clock.now(), using=keys_db())

    def field(self, *, context: str, mask_rule: str, indexed: bool = True) -> None:
        """Register one encrypted field (its context, mask rule and, when `indexed`, blind
        index); `seal_new_subjects` takes a column of values per field, in this order."""
        self._fields.append((context, mask_rule, field_key(context) if indexed else None))

    def seal(self, plaintext: str, *, subject_id, context: str) -> bytes:
        """One value (a custom field's): sealed here, under the subject's new key."""
        subject = str(subject_id)
        _key_id, aead, header = self._cipher(subject)
        nonce = self._core.take(NONCE_BYTES)
        return header + nonce + aead.encrypt(nonce, plaintext.encode(),
                                             value_aad(context, subject))

    def seal_new_subjects(self, subjects: list, columns: tuple, *,
                          absent: tuple | None = None) -> "Sealed":
        """Seal the values of new subjects (their ids as text). `columns` holds one list per
        registered field, in order, aligned with `subjects`: the plaintext, or "" for none. A
        subject without any value gets no data key.

        → a `Sealed` whose `result()` has an entry per subject. With `absent` — per field, the
        COPY texts of its three columns when it has no value — a text for a `CopyRows.join`
        slot: per field (sealed value, mask, blind index) in COPY's text format, or its absent
        texts, all joined by tabs. Without, the flat tuple of those values as EncryptedField
        stores them (None, "", "" for a field without a value), or None for a subject with
        none.

        With a helper (and `absent`) the work is sent to it and `result()` collects it: do the
        rest of the chunk in between. Subjects this sealer already keyed (with `seal`) stay
        here.
        """
        fields = tuple(self._fields)
        if self._helper is not None and absent is not None and self._keys.postgres \
                and subjects and not any(subject in self._ciphers for subject in subjects):
            key_line = self._keys.line_template("subject_id", "key_id", "wrapped",
                                                master_key_id=self._master_id)
            request = (fields, key_line, absent, subjects, columns)
            sealed = Sealed(self, request, helper=self._helper)
            try:
                self._helper.submit(request, answer=sealed)
                return sealed
            except SealingHelperError:
                self._helper_failed(self._helper)
        return Sealed(self, None, done=self._seal_here(fields, absent, subjects, columns))

    def _seal_here(self, fields: tuple, absent, subjects: list, columns: tuple) -> list:
        prepared = self._core.prepare(fields)
        as_text = absent is not None
        none = "\t".join(cell for field in absent for cell in field) if as_text else None
        out = []
        for subject, values in zip(subjects, zip(*columns, strict=True), strict=True):
            if not any(values):
                out.append(none)
                continue
            _key_id, aead, header = self._cipher(subject)
            sealed = iter(self._core.seal(aead, header, subject, [
                (position, value) for position, value in enumerate(values) if value], prepared))
            flat = []
            for position, value in enumerate(values):
                if value:
                    flat += map(copy_text, next(sealed)) if as_text else next(sealed)
                else:
                    flat += absent[position] if as_text else _NO_VALUE
            out.append("\t".join(flat) if as_text else tuple(flat))
        return out

    def _from_helper(self, helper: SealingHelper, request: tuple) -> list:
        fields, _key_line, absent, subjects, columns = request
        try:
            keys, joined = helper.result()
            lines = joined.split("\n")
            # A line per subject, and a key for each with a value: a value sealed under a key
            # that is not saved could never be opened again.
            flags = list(map(any, zip(*columns, strict=True)))
            keyed = sum(flags)
            if len(lines) != len(subjects) or (keys.count("\n") + 1 if keys else 0) != keyed:
                raise SealingHelperError("The sealing helper answered for other subjects.")
            self._vouch(keys, lines, request, flags)
        except (SealingHelperError, TypeError, ValueError, AttributeError):
            self._helper_failed(helper)
            return self._seal_here(fields, absent, subjects, columns)
        self._keys.add_text(keys, keyed)
        self._elsewhere.update(subjects)  # each keyed there, if it has a value
        return lines

    def _vouch(self, keys: str, lines: list, request: tuple, flags: list) -> None:
        """Open the answer for the first and the last subject with values as the database will
        hold it: their key rows unwrap under the master key, each value opens under that key
        for that subject and field, and the masks and blind-index tags are the values'. An
        answer whose lines or key rows are out of step with the subjects — shifted, reversed,
        crossed — fails here (SealingHelperError) instead of storing values nobody can open."""
        fields, _key_line, absent, subjects, columns = request
        checked = ((flags.index(True), keys.partition("\n")[0]),
                   (len(flags) - 1 - flags[::-1].index(True), keys.rpartition("\n")[2]))
        prepared = self._core.prepare(fields)
        subject_slot, key_id_slot, wrapped_slot = self._keys.slots(
            "subject_id", "key_id", "wrapped")
        try:
            for at, key_line in checked:
                subject = subjects[at]
                key_cells = key_line.split("\t")
                key_id = key_cells[key_id_slot]
                if key_cells[subject_slot] != copy_str(subject):
                    raise DecryptionError("A key row of another subject.")
                key = open_sealed(_bytea(key_cells[wrapped_slot]), key=self._master_key,
                                  aad=data_key_aad(subject, key_id))
                cells = lines[at].split("\t")
                for position, ((context, _rule, _index_key), column) in enumerate(
                        zip(fields, columns, strict=True)):
                    value, got = column[at], tuple(cells[3 * position:3 * position + 3])
                    if not value:
                        expected = absent[position]
                    else:
                        sealed = _bytea(got[0])
                        if key_id_of(sealed) != key_id or open_sealed(
                                sealed, key=key, aad=value_aad(context, subject)) \
                                != value.encode():
                            raise DecryptionError("A value of another subject or field.")
                        _prefix, _mask, copy_mask_, tagger = prepared[position]
                        expected = (got[0], copy_mask_(value), tagger(value) if tagger else "")
                    if got != tuple(expected):
                        raise DecryptionError("Cells of another subject or field.")
        except (DecryptionError, IndexError, ValueError):
            raise SealingHelperError("The sealing helper answered for other subjects.") from None

    def _helper_failed(self, helper: SealingHelper) -> None:
        logger.warning("The sealing helper stopped; sealing in the import's own process.")
        helper.close()
        self._helper = None

    def _cipher(self, subject: str) -> tuple:
        entry = self._ciphers.get(subject)
        if entry is None:
            if subject in self._elsewhere:
                raise ValueError("This subject was sent to the sealing helper: its values "
                                 "are sealed there, under the key made there.")
            key_id, wrapped, aead, header = self._core.new_key(subject)
            self._keys.add({"subject_id": subject, "key_id": key_id,
                            "master_key_id": self._master_id, "wrapped": wrapped})
            entry = self._ciphers[subject] = (key_id, aead, header)
        return entry

    def save_keys(self) -> int:
        """Write the data keys generated so far (one COPY); returns how many."""
        return self._keys.write()


class Sealed:
    """The sealed values of `NewSubjectSealer.seal_new_subjects`, done or on their way."""

    def __init__(self, sealer, request: tuple | None, *, helper=None, done=None):
        self._sealer, self._request, self._helper, self._done = sealer, request, helper, done

    def result(self) -> list:
        if self._done is None:
            self._done = self._sealer._from_helper(self._helper, self._request)
            self._request = None  # the plaintext columns are not kept longer than needed
        return self._done
