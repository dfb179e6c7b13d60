"""The field access log: append and verify a keyed hash chain.

Each row's hash is HMAC-SHA256 (key derived from BLIND_INDEX_KEY for this purpose) over its
content and the previous row's hash; `seq` has no gaps. An edited row fails its own hash, a
removed row leaves a gap or a broken link, and rows removed from the end disagree with the head
record (the last row's seq and hash, keyed) that every append rewrites.
"""

import hashlib
import hmac
import json

from django.db import connection, transaction

from config import clock

from .keys import derive, keyring
from .models import FieldAccessLog, FieldAccessLogHead

GENESIS = "0" * 64


def _key() -> bytes:
    return derive(keyring().blind_index_key, "field-access-log")


def head_mac(seq: int, hash_: str) -> str:
    return hmac.new(_key(), f"head:{seq}:{hash_}".encode(), hashlib.sha256).hexdigest()


def _digest(row: FieldAccessLog) -> str:
    payload = json.dumps(
        [row.seq, row.at.isoformat(), row.username, row.role, str(row.subject_id), row.field,
         row.reason, row.ip or "", row.prev_hash],
        separators=(",", ":"), ensure_ascii=False,
    ).encode()
    return hmac.new(_key(), payload, hashlib.sha256).hexdigest()


def _lock_chain() -> None:
    # One writer at a time extends the chain (PostgreSQL; SQLite serialises writes anyway).
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext('encryption.field_access_log'))")


def append(*, user, role: str, subject_id, field: str, reason: str, ip: str | None):
    """Append one row in its own transaction (committed when this returns outside a block)."""
    with transaction.atomic():
        _lock_chain()
        last = FieldAccessLog.objects.order_by("-seq").only("seq", "hash").first()
        row = FieldAccessLog(
            seq=(last.seq + 1) if last else 1, at=clock.now(), user=user,
            username=user.get_username(), role=role, subject_id=subject_id, field=field,
            reason=reason, ip=ip or None, prev_hash=last.hash if last else GENESIS,
        )
        row.hash = _digest(row)
        row.save(force_insert=True)
        FieldAccessLogHead.objects.update_or_create(
            pk=1, defaults={"seq": row.seq, "hash": row.hash,
                            "mac": head_mac(row.seq, row.hash)})
    return row


def verify() -> list[str]:
    """Return a list of problems (empty when the whole chain is intact)."""
    problems = []
    expected_seq, prev_hash = 1, GENESIS
    for row in FieldAccessLog.objects.order_by("seq").iterator(chunk_size=2000):
        if row.seq != expected_seq:
            problems.append(f"rows {expected_seq}..{row.seq - 1} are missing")
        elif row.prev_hash != prev_hash:
            problems.append(f"row {row.seq} does not link to the row before it")
        if _digest(row) != row.hash:
            problems.append(f"row {row.seq} was altered")
        expected_seq, prev_hash = row.seq + 1, row.hash
    head = FieldAccessLogHead.objects.filter(pk=1).first()
    last = expected_seq - 1  # 0: no rows
    if head is None:
        if last:
            problems.append("the head record is missing")
    elif not hmac.compare_digest(head.mac, head_mac(head.seq, head.hash)):
        problems.append("the head record was altered")
    elif head.seq > last:
        problems.append(f"rows {last + 1}..{head.seq} were removed from the end")
    elif head.seq < last:
        problems.append(f"rows {head.seq + 1}..{last} were added outside the log's service")
    elif head.hash != prev_hash:
        problems.append(f"row {last} is not the one the head record names")
    return problems
