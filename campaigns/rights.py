"""What campaigns holds about a person, for the rights crm runs (crm.rights): erase it, export
it, and tell the contact about a rights event. Registered in CampaignsConfig.ready()."""

import re

from django.db.models import Q

from config import clock
from crm.models import Person

from .emails import enqueue, person_link
from .gateway import Kind
from .models import (
    DoubleOptInRequest,
    EmailMessage,
    InboundMessage,
    MailboxMessage,
    TrackingEvent,
)


def _address_pattern(email: str) -> str:
    # One address of the `to` list ("a@x, b@y"), not a longer address that contains it.
    return r"(^|[\s,<])" + re.escape(email) + r"($|[\s,>])"


def erase(person_id) -> None:
    """Delete or blank every stored message to or from the person.

    The outbox rows stay as a PII-free mail log (kind, status, dates, reason): their address,
    subject, bodies and headers are blanked. A row still queued is suppressed by the gateway's
    re-check before sending (the person is erased or gone). Inbound messages, double opt-in
    requests, opens and clicks, and the development mailbox's copies are deleted.
    """
    email = Person.objects.filter(pk=person_id).values_list("email", flat=True).first() or ""
    mine = Q(person_id=person_id)
    if email:
        # Rows of an earlier, deleted record of the same address keep it too.
        mine |= Q(to_address__iexact=email)
    message_ids = list(EmailMessage.objects.filter(mine).values_list("message_id", flat=True))
    message_ids += list(InboundMessage.objects.filter(person_id=person_id)
                        .values_list("message_id", flat=True))
    mailbox = Q(message_id__in=[m for m in message_ids if m])
    if email:
        mailbox |= Q(to__iregex=_address_pattern(email)) | Q(from_email__iexact=email)
    MailboxMessage.objects.filter(mailbox).delete()
    EmailMessage.objects.filter(mine).update(
        to_address="", subject="", body_text="", body_html="", headers={},
        updated_at=clock.now())
    InboundMessage.objects.filter(person_id=person_id).delete()
    DoubleOptInRequest.objects.filter(person_id=person_id).delete()
    TrackingEvent.objects.filter(person_id=person_id).delete()


def export(person_id) -> dict:
    """The emails we sent (or held back), the messages the person sent us, and their recorded
    opens and clicks."""
    sent = EmailMessage.objects.filter(person_id=person_id).order_by("created_at", "id")
    inbound = InboundMessage.objects.filter(person_id=person_id).order_by("received_at", "id")
    tracked = (TrackingEvent.objects.filter(person_id=person_id).select_related("campaign")
               .order_by("created_at", "id"))
    return {
        "emails": [
            {"kind": m.kind, "status": m.status, "reason": m.reason, "subject": m.subject,
             "created_at": m.created_at.isoformat(),
             "sent_at": m.sent_at.isoformat() if m.sent_at else None}
            for m in sent
        ],
        "messages_received": [
            {"subject": m.subject, "text": m.body_text, "received_at": m.received_at.isoformat()}
            for m in inbound
        ],
        "opens_and_clicks": [
            {"kind": e.kind, "url": e.url, "at": e.created_at.isoformat(),
             "campaign": e.campaign.name if e.campaign else None}
            for e in tracked
        ],
    }


def notify_processing_resumed(person_id) -> None:
    """Tell the contact that processing of their data resumes. System mail: it serves their
    rights, so the gateway lets it through despite the stop (and an opt-out)."""
    person = Person.objects.get(pk=person_id)
    now = clock.now()
    page = person_link(person, url_name="preference-page", purpose="portal")
    enqueue(person=person, kind=Kind.SYSTEM, template="processing_resumed",
            context={"resumed_at": now, "page_url": page},
            idempotency_key=f"processing-resumed:{person.pk}:{now.isoformat()}")
