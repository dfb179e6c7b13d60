"""Ad-hoc email from a person's record, and replies to what the contact sent us.

A reply continues a conversation the contact started, so it may go even after an opt-out; an
ad-hoc message may not. Which one a message is follows from the gateway's reply rule.
"""

import uuid

from django.db import transaction
from django.utils.translation import gettext as _

from config import clock
from crm.errors import ServiceError

from . import gateway
from .emails import enqueue
from .models import EmailMessage, InboundMessage


class NotAllowed(ServiceError):
    status_code = 409
    code = "not_allowed"


def inbound_record(*, person, message_id: str, subject: str, body: str, user=None,
                   received_at=None) -> InboundMessage:
    """Record a message the contact sent (pasted by staff or posted by an integration)."""
    message_id = (message_id or "").strip() or f"<recorded-{uuid.uuid4().hex}@consenso>"
    return InboundMessage.objects.create(
        person=person, message_id=message_id, subject=subject[:998], body_text=body,
        received_at=received_at or clock.now(), recorded_by=user)


def email_compose(*, person, subject: str, body: str, user, in_reply_to: str = "") -> EmailMessage:
    """Queue a staff-written email. With `in_reply_to` naming a message this person sent, it is
    a reply; otherwise ad-hoc. Refused (NotAllowed, with the gateway's reason) when it may not go.
    """
    if not subject.strip() or not body.strip():
        raise ServiceError(_("Write a subject and a message."), field="body")
    kind = gateway.Kind.REPLY if gateway.is_reply(person, in_reply_to) else gateway.Kind.ADHOC
    decision = gateway.decide(person, kind)
    if not decision.allowed:
        raise NotAllowed(_("This email may not be sent: %(reason)s.") % {
            "reason": decision.reason})
    with transaction.atomic():
        return enqueue(person=person, kind=kind, template="adhoc",
                       context={"subject": subject.strip(), "body": body.strip()},
                       idempotency_key=f"adhoc:{user.pk if user else 0}:{uuid.uuid4().hex}",
                       in_reply_to=in_reply_to if kind == gateway.Kind.REPLY else "")
