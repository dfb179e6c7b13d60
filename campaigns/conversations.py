"""Ad-hoc email from a person's record, and replies to what the contact sent us.

A reply continues a conversation the contact started, so it may go even after an opt-out; an
ad-hoc message may not. Which one a message is follows from the gateway's reply rule.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from config import clock
from crm.errors import ServiceError

from . import gateway
from .emails import RenderedEmail, enqueue, render
from .models import EmailMessage, InboundMessage

# The named starting points staff pick from: templates/emails/staff_<name>-*. The message that
# goes is always the "adhoc" email built from what staff finally wrote.
STAFF_TEMPLATES = {
    "blank": gettext_lazy("Blank"),
    "follow_up": gettext_lazy("Follow-up"),
    "meeting_request": gettext_lazy("Meeting request"),
}
STAFF_KINDS = (gateway.Kind.ADHOC, gateway.Kind.REPLY)


class NotAllowed(ServiceError):
    status_code = 409
    code = "not_allowed"

    def __init__(self, message: str, *, reason: str):
        super().__init__(message)
        self.reason = reason


def inbound_record(*, person, message_id: str, subject: str, body: str, user=None,
                   received_at=None) -> InboundMessage:
    """Record a message the contact sent (pasted by staff or posted by an integration). Without
    a Message-ID one is made up; a Message-ID already recorded is refused (400, field
    `message_id`): a message is recorded once."""
    message_id = (message_id or "").strip() or f"<recorded-{uuid.uuid4().hex}@consenso>"
    taken = ServiceError(_("This message is already recorded."), field="message_id")
    if InboundMessage.objects.filter(message_id=message_id).exists():
        raise taken
    try:
        with transaction.atomic():
            return InboundMessage.objects.create(
                person=person, message_id=message_id, subject=subject[:998], body_text=body,
                received_at=received_at or clock.now(), recorded_by=user)
    except IntegrityError:  # recorded concurrently
        raise taken from None


def email_kind(*, person, in_reply_to: str = "") -> str:
    """The kind a staff-written email to `person` would be: a reply when `in_reply_to` names a
    message this person sent us, else ad-hoc."""
    return gateway.Kind.REPLY if gateway.is_reply(person, in_reply_to) else gateway.Kind.ADHOC


def email_compose(*, person, subject: str, body: str, user, in_reply_to: str = "") -> EmailMessage:
    """Queue a staff-written email. With `in_reply_to` naming a message this person sent, it is
    a reply; otherwise ad-hoc. Refused (NotAllowed, with the gateway's reason) when it may not go.
    """
    if not subject.strip() or not body.strip():
        raise ServiceError(_("Write a subject and a message."), field="body")
    kind = email_kind(person=person, in_reply_to=in_reply_to)
    decision = gateway.decide(person, kind)
    if not decision.allowed:
        raise NotAllowed(_("This email may not be sent: %(reason)s.") % {
            "reason": decision.reason}, reason=decision.reason)
    with transaction.atomic():
        return enqueue(person=person, kind=kind, template="adhoc",
                       context={"subject": subject.strip(), "body": body.strip()},
                       idempotency_key=f"adhoc:{user.pk if user else 0}:{uuid.uuid4().hex}",
                       in_reply_to=in_reply_to if kind == gateway.Kind.REPLY else "")


def staff_template_render(*, name: str, person, user=None) -> RenderedEmail:
    """A staff template filled in for `person`: the subject and text staff start from."""
    if name not in STAFF_TEMPLATES:
        raise ServiceError(_("Unknown template."), field="template")
    sender_name = (user.get_full_name() or user.get_username()) if user else ""
    return render(f"staff_{name}", {"person": person, "sender_name": sender_name})


@dataclass(frozen=True)
class ConversationItem:
    direction: str  # "in" (the contact wrote) or "out" (we wrote)
    at: datetime
    subject: str
    message_id: str
    kind: str = ""  # outbound: adhoc | reply
    status: str = ""  # outbound: the outbox status
    reason: str = ""  # outbound: why it was suppressed or failed


def conversation_recent(*, person, limit: int = 20) -> list[ConversationItem]:
    """The latest messages between staff and `person`, newest first: what they sent us and
    what staff wrote to them (ad-hoc and replies; campaigns are in the mail log)."""
    inbound = [ConversationItem("in", m.received_at, m.subject, m.message_id)
               for m in InboundMessage.objects.filter(person=person)
               .order_by("-received_at")[:limit]]
    outbound = [ConversationItem("out", m.created_at, m.subject, m.message_id, kind=m.kind,
                                 status=m.status, reason=m.reason)
                for m in EmailMessage.objects.filter(person=person, kind__in=STAFF_KINDS)
                .only("created_at", "subject", "message_id", "kind", "status", "reason")
                .order_by("-created_at")[:limit]]
    return sorted(inbound + outbound, key=lambda item: item.at, reverse=True)[:limit]
