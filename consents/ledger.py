"""The consent ledger: append an event to a person's hash chain, and verify chains.

Each event's hash is an HMAC (key derived from BLIND_INDEX_KEY for this purpose only) over its
content and the previous event's hash. The content holds ids, codes and keyed hashes only — no
name, address or free text about the person — so erasure never has to touch it.
"""

import hashlib
import hmac
import json

from django.db import connection

from encryption.keys import derive, keyring

from .models import ConsentEvent

GENESIS = "0" * 64


def _key(purpose: str) -> bytes:
    return derive(keyring().blind_index_key, purpose)


def keyed_hash(value: str | None, *, purpose: str) -> str:
    """A keyed hash of IP or user agent: proves which one it was, reveals neither."""
    if not value:
        return ""
    return hmac.new(_key(f"consent-{purpose}"), value.encode(), hashlib.sha256).hexdigest()


def payload(event: ConsentEvent) -> bytes:
    return json.dumps(
        {
            "person": str(event.person_id), "seq": event.seq, "subject": event.subject,
            "version": event.purpose_version_id, "action": event.action, "state": event.state,
            "source": event.source, "verified_by": event.verified_by, "evidence": event.evidence,
            "ip": event.ip_hash, "ua": event.ua_hash, "at": event.at.isoformat(),
            "prev": event.prev_hash,
        },
        sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    ).encode()


def digest(event: ConsentEvent) -> str:
    return hmac.new(_key("consent-ledger"), payload(event), hashlib.sha256).hexdigest()


def lock_chain(person_id) -> None:
    """Serialise appends to one person's chain (caller holds a transaction)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"consent:{person_id}"])


def append(event: ConsentEvent) -> ConsentEvent:
    """Link and save `event` (fields other than seq/prev_hash/hash already set).

    The caller runs inside transaction.atomic and has called lock_chain(person_id).
    """
    last = (ConsentEvent.objects.filter(person_id=event.person_id)
            .order_by("-seq").only("seq", "hash").first())
    event.seq = last.seq + 1 if last else 1
    event.prev_hash = last.hash if last else GENESIS
    event.hash = digest(event)
    event.save(force_insert=True)
    return event


def verify_chain(events) -> list[str]:
    """Problems in one person's events (given in seq order); empty when intact."""
    problems = []
    expected, prev = 1, GENESIS
    for event in events:
        if event.seq != expected:
            problems.append(f"person {event.person_id}: events {expected}..{event.seq - 1} missing")
        elif event.prev_hash != prev:
            problems.append(f"person {event.person_id}: event {event.seq} does not link back")
        if digest(event) != event.hash:
            problems.append(f"person {event.person_id}: event {event.seq} was altered")
        expected, prev = event.seq + 1, event.hash
    return problems


def verify_all() -> list[str]:
    problems, current, batch = [], None, []
    for event in ConsentEvent.objects.order_by("person_id", "seq").iterator(chunk_size=5000):
        if event.person_id != current and batch:
            problems += verify_chain(batch)
            batch = []
        current = event.person_id
        batch.append(event)
    if batch:
        problems += verify_chain(batch)
    return problems
