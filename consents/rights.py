"""What consents holds about a person, for the rights crm runs (crm.rights). Registered in
ConsentsConfig.ready().

Erasure: nothing here is deleted. A person's current states (`Consent`) and their ledger hold
ids, codes, times and keyed hashes — no personal data — and the ledger is append-only proof
(the database refuses UPDATE and DELETE), which must still verify after an erasure. One caveat:
a staff-recorded answer keeps its free-text `note` in the event's evidence, inside the hashed
payload; it cannot be blanked without breaking the chain, so staff must not write personal data
there (the consent form says so).
"""

from .models import Consent, ConsentEvent


def export(person_id) -> dict:
    """The person's consent states and the full history of their decisions (the ledger)."""
    states = (Consent.objects.filter(person_id=person_id).select_related("purpose", "version")
              .order_by("purpose__position", "purpose__key"))
    events = (ConsentEvent.objects.filter(person_id=person_id).select_related("purpose_version")
              .order_by("seq"))
    return {
        "current": [
            {"purpose": c.purpose.name, "key": c.purpose.key, "state": c.state,
             "text_version": c.version.version if c.version else None,
             "since": c.updated_at.isoformat(),
             "expires_at": c.expires_at.isoformat() if c.expires_at else None}
            for c in states
        ],
        "history": [
            {"seq": e.seq, "subject": e.subject, "action": e.action, "state": e.state,
             "via": e.source, "verified_by": e.verified_by, "at": e.at.isoformat(),
             "text_version": e.purpose_version.version if e.purpose_version else None,
             "note": (e.evidence or {}).get("note", "")}
            for e in events
        ],
    }


def unconfirmed_lead_retention_months() -> int | None:
    """The admins' retention setting, read by crm's retention task (None: off)."""
    from .selectors import portal_settings

    return portal_settings().unconfirmed_lead_retention_months
