"""Proof of consent: for one person and purpose, the chain of events with the exact text each
refers to, how each step was verified, and the result of checking the person's whole chain."""

from . import ledger
from .models import ConsentEvent, ConsentPurpose


def proof_of_consent(person_id, purpose: ConsentPurpose) -> dict:
    chain = list(ConsentEvent.objects.filter(person_id=person_id).order_by("seq")
                 .select_related("purpose_version"))
    problems = ledger.verify_chain(chain)
    steps = []
    for event in chain:
        if event.subject != purpose.key:
            continue
        version = event.purpose_version
        steps.append({
            "event": event.pk, "seq": event.seq, "at": event.at.isoformat(),
            "action": event.action, "state": event.state, "source": event.source,
            "verified_by": event.verified_by, "evidence": event.evidence,
            "ip_hash": event.ip_hash, "user_agent_hash": event.ua_hash, "hash": event.hash,
            "prev_hash": event.prev_hash,
            "text": {"version": version.version, "title": version.title, "text": version.text,
                     "text_hash": version.text_hash} if version else None,
        })
    return {
        "person": str(person_id), "purpose": {"key": purpose.key, "name": purpose.name,
                                              "kind": purpose.kind},
        "steps": steps,
        "chain": {"events": len(chain), "intact": not problems, "problems": problems},
    }
