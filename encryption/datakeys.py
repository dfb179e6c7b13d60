"""Per-subject data keys: created on first use, wrapped by the primary master key, destroyed on
erasure (crypto-shredding), re-wrapped on master-key rotation."""

import os
import secrets
import uuid
from collections.abc import Iterable

from django.db import transaction

from .cipher import DecryptionError, open_sealed, seal
from .keys import keyring
from .models import DataKey
from .router import keys_db
from .sealing import DATA_KEY_BYTES
from .sealing import data_key_aad as _aad


class DataKeyDestroyed(DecryptionError):
    """The subject's data key was destroyed (erasure): their sealed values are gone for good."""


def _wrap(subject_id, key_id: str, key: bytes) -> DataKey:
    ring = keyring()
    return DataKey(
        subject_id=subject_id, key_id=key_id, master_key_id=ring.primary_id,
        wrapped=seal(key, key=ring.primary, key_id=ring.primary_id,
                     aad=_aad(subject_id, key_id)),
    )


def _unwrap(row: DataKey) -> bytes:
    master = keyring().get(row.master_key_id)
    return open_sealed(bytes(row.wrapped), key=master, aad=_aad(row.subject_id, row.key_id))


def data_keys(subject_ids: Iterable, *, create: bool) -> dict:
    """Map subject id → (key id, key bytes) for many subjects in one query (plus one insert).

    With create=False a subject without a key is left out of the result.
    """
    ids = [s if isinstance(s, uuid.UUID) else uuid.UUID(str(s)) for s in subject_ids]
    db = keys_db()
    rows = {r.subject_id: r for r in DataKey.objects.using(db).filter(subject_id__in=ids)}
    if create:
        missing = [s for s in dict.fromkeys(ids) if s not in rows]
        if missing:
            fresh = [_wrap(s, secrets.token_hex(4), os.urandom(DATA_KEY_BYTES)) for s in missing]
            # Another process may create the same subject's key at the same moment: keep
            # whichever row won and read it back.
            DataKey.objects.using(db).bulk_create(fresh, ignore_conflicts=True)
            rows.update(
                (r.subject_id, r) for r in DataKey.objects.using(db).filter(subject_id__in=missing)
            )
    return {s: (row.key_id, _unwrap(row)) for s, row in rows.items()}


def data_key(subject_id, *, create: bool) -> tuple[str, bytes]:
    found = data_keys([subject_id], create=create)
    if not found:
        raise DataKeyDestroyed("This person's data key was destroyed; their values are erased.")
    return next(iter(found.values()))


def destroy_data_key(subject_id) -> bool:
    """Crypto-shred: delete the subject's data key. Returns whether one existed."""
    deleted, _ = DataKey.objects.using(keys_db()).filter(subject_id=subject_id).delete()
    return bool(deleted)


def rewrap_batch(batch_size: int = 1000, *, after=None) -> tuple[int, object]:
    """Re-wrap up to `batch_size` data keys still under a non-primary master key, the first
    ones in subject order after `after`. Returns (how many, the subject to continue after —
    None when no key is left under an old master key past `after`).

    The keys are walked in primary-key order: the table has no index on `master_key_id`, since
    every person written (an import writes 100,000) would pay for one that only a rotation
    reads. Resumable by construction: each batch commits on its own, and a rotation started
    again from the beginning skips the keys already re-wrapped.
    """
    ring = keyring()
    db = keys_db()
    with transaction.atomic(using=db):
        keys = DataKey.objects.using(db).exclude(master_key_id=ring.primary_id)
        if after is not None:
            keys = keys.filter(subject_id__gt=after)
        rows = list(keys.select_for_update(skip_locked=True).order_by("subject_id")[:batch_size])
        for row in rows:
            fresh = _wrap(row.subject_id, row.key_id, _unwrap(row))
            row.master_key_id, row.wrapped = fresh.master_key_id, fresh.wrapped
        DataKey.objects.using(db).bulk_update(rows, ["master_key_id", "wrapped"])
    return len(rows), (rows[-1].subject_id if rows else None)


def master_key_usage() -> dict:
    """How many data keys each master key wraps (a key may be retired at zero)."""
    from django.db.models import Count

    usage = {key_id: 0 for key_id in keyring().keys}
    for row in (DataKey.objects.using(keys_db()).values("master_key_id")
                .annotate(n=Count("subject_id"))):
        usage[row["master_key_id"]] = row["n"]
    return usage
