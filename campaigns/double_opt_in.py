"""Double opt-in: email a single-use link; the contact's POST on its page confirms.

Mail scanners follow links, so the link opens a page whose button POSTs; a GET changes nothing.
"""

import hashlib
import secrets
from datetime import timedelta

from django.db import transaction
from django.urls import reverse
from django.utils.translation import gettext as _

from config import clock
from consents.models import Verification
from crm.errors import ServiceError
from crm.models import EmailOptIn, Person

from . import gateway
from .emails import absolute_url, enqueue
from .models import DoubleOptInBatch, DoubleOptInRequest
from .optin import Actor, opt_in_change

LINK_TTL = timedelta(days=7)


class NotSent(ServiceError):
    status_code = 409
    code = "double_opt_in_not_sent"


class LinkInvalid(ServiceError):
    status_code = 404
    code = "link_invalid"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def double_opt_in_send(*, person: Person, source: str) -> DoubleOptInRequest:
    """Queue the confirmation email. Refused (NotSent, with the gateway's reason) for people
    who opted out, are stopped, erased, suppressed, have no address, or already confirmed."""
    person = Person.objects.get(pk=person.pk)
    if person.email_opt_in == EmailOptIn.DOUBLE_OPT_IN:
        raise NotSent(_("This person has already confirmed."), field=None)
    decision = gateway.decide(person, gateway.Kind.DOUBLE_OPT_IN)
    if not decision.allowed:
        error = NotSent(_("Not sent: %(reason)s.") % {"reason": decision.reason})
        error.reason = decision.reason
        raise error
    token = secrets.token_urlsafe(32)
    now = clock.now()
    with transaction.atomic():
        request = DoubleOptInRequest.objects.create(
            person=person, token_hash=_hash(token), source=source, created_at=now,
            expires_at=now + LINK_TTL)
        link = absolute_url(reverse("double-opt-in-confirm", args=[token]))
        request.message = enqueue(
            person=person, kind=gateway.Kind.DOUBLE_OPT_IN, template="double_opt_in",
            context={"confirm_url": link, "expires_days": LINK_TTL.days},
            idempotency_key=f"double-opt-in:{request.pk}")
        request.save(update_fields=["message"])
    return request


def find_request(token: str) -> DoubleOptInRequest:
    """The pending request for a link, or LinkInvalid (unknown, used or expired)."""
    request = (DoubleOptInRequest.objects.select_related("person", "message")
               .filter(token_hash=_hash(token or "")).first())
    if request is None or request.confirmed_at is not None or request.expires_at <= clock.now():
        raise LinkInvalid(_("This confirmation link is not valid any more."))
    return request


def double_opt_in_confirm(*, token: str, ip: str | None, user_agent: str | None) -> Person:
    """Confirm once: the conditional update makes parallel clicks apply a single time."""
    with transaction.atomic():
        request = find_request(token)
        claimed = DoubleOptInRequest.objects.filter(
            pk=request.pk, confirmed_at__isnull=True).update(confirmed_at=clock.now())
        if not claimed:
            raise LinkInvalid(_("This confirmation link is not valid any more."))
        return opt_in_change(
            person=request.person, actor=Actor.DOUBLE_OPT_IN,
            verified_by=Verification.EMAIL_CONFIRMATION,
            evidence={"message_id": request.message.message_id if request.message else "",
                      "request": request.pk},
            ip=ip, user_agent=user_agent)


def double_opt_in_batch_start(*, marketing_list, user) -> DoubleOptInBatch:
    """Queue sending the request to every member of a list (runs in the background)."""
    from .tasks import send_double_opt_in_batch

    batch = DoubleOptInBatch.objects.create(marketing_list=marketing_list, started_by=user)
    transaction.on_commit(lambda: send_double_opt_in_batch.delay(batch.pk))
    return batch


def double_opt_in_batch_run(batch_id: int) -> dict:
    """Send to each member not yet handled; skip (and count by reason) the opted-out, stopped,
    erased, suppressed and already confirmed. Resumable: members already counted are skipped
    by the per-request idempotency of earlier runs."""
    batch = DoubleOptInBatch.objects.select_related("marketing_list").get(pk=batch_id)
    counts: dict = {}
    members = batch.marketing_list.members.order_by("pk").iterator(chunk_size=500)
    for person in members:
        already = DoubleOptInRequest.objects.filter(
            person=person, source=f"batch:{batch.pk}").exists()
        if already:
            counts["sent"] = counts.get("sent", 0) + 1
            continue
        try:
            double_opt_in_send(person=person, source=f"batch:{batch.pk}")
            outcome = "sent"
        except NotSent as refused:
            outcome = getattr(refused, "reason", "already_confirmed")
        counts[outcome] = counts.get(outcome, 0) + 1
    DoubleOptInBatch.objects.filter(pk=batch.pk).update(counts=counts,
                                                        finished_at=clock.now())
    return counts
