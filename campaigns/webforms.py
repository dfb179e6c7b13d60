"""Public web forms: a submission creates or completes a person, records the opt-in and the
consents ticked, and sends the double opt-in request — all through the owning services."""

import hashlib
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from config import clock
from config.ratelimit import hit
from consents import services as consent_services
from consents.models import Source, Verification
from crm import services as crm_services
from crm.errors import ServiceError
from crm.models import EmailOptIn, Person

from .double_opt_in import NotSent, double_opt_in_send
from .emails import enqueue
from .gateway import Kind
from .models import WebForm
from .optin import Actor, opt_in_change

# What a public form may ask besides the address: never a sensitive field.
ASKABLE = ("first_name", "last_name", "phone", "company", "country")
HONEYPOT = "website"
IP_LIMIT_PER_MINUTE = 60          # DESIGN: at least 20 accepted per IP per minute
DOUBLE_OPT_IN_PER_ADDRESS_HOUR = 5


class RateLimited(ServiceError):
    status_code = 429
    code = "rate_limited"


@dataclass
class Submitted:
    person: Person | None
    double_opt_in_sent: bool = False


def webform_clean(form: WebForm) -> None:
    bad = [f for f in form.fields if f not in ASKABLE] if isinstance(form.fields, list) else [1]
    if bad:
        raise ValidationError({"fields": [_("A web form may ask: %(f)s.") % {
            "f": ", ".join(ASKABLE)}]})


def webform_save(*, form: WebForm) -> WebForm:
    webform_clean(form)
    form.full_clean()
    form.save()
    return form


def _ticked(value) -> bool:
    return str(value).strip().lower() in ("on", "true", "1", "yes")


def webform_submit(*, form: WebForm, data, ip: str | None, user_agent: str | None) -> Submitted:
    """Handle one public submission. Raises ValidationError (field errors) or RateLimited.

    An existing person (same address) is completed, never overwritten: only blank fields are
    filled, and a stopped record is not written at all. Ticking the marketing box is the
    contact's own fresh choice: it reopens an earlier opt-out and sends the double opt-in.
    """
    if ip and hit(f"webform-ip:{ip}", 60) > IP_LIMIT_PER_MINUTE:
        raise RateLimited(_("Too many submissions; try again in a minute."))
    if str(data.get(HONEYPOT, "")).strip():
        return Submitted(person=None)  # a bot filled the hidden field: accept, do nothing
    values = {name: str(data.get(name, "")).strip() for name in form.fields if data.get(name)}
    values["email"] = crm_services.normalise_email(str(data.get("email", "")))
    if not values["email"]:
        raise ValidationError({"email": [_("Enter your email address.")]})
    crm_services.person_clean_values(values, definitions=[])  # same checks as every write
    purposes = {p.key: p for p in form.consent_purposes.filter(active=True)}
    with transaction.atomic():
        person = Person.objects.filter(email=values["email"]).first()
        if person is None:
            person = crm_services.person_create(data={**values, "kind": form.kind},
                                                source=Source.WEBFORM)
        elif person.processing_stopped_at is None:
            blanks = {k: v for k, v in values.items() if k != "email" and not getattr(person, k)}
            if blanks:
                person = crm_services.person_update(person=person, data=blanks,
                                                    source=Source.WEBFORM)
        evidence = {"form": form.slug}
        for key, purpose in purposes.items():
            if _ticked(data.get(f"consent_{key}", "")):
                consent_services.consent_grant(
                    person=person, purpose=purpose, source=Source.WEBFORM,
                    verified_by=Verification.WEB_FORM, evidence=evidence, ip=ip,
                    user_agent=user_agent)
        sent = False
        if _ticked(data.get("marketing", "")):
            person = opt_in_change(person=person, actor=Actor.WEBFORM,
                                   verified_by=Verification.WEB_FORM, evidence=evidence, ip=ip,
                                   user_agent=user_agent)
            if person.email_opt_in != EmailOptIn.DOUBLE_OPT_IN:
                address_key = hashlib.sha256(values["email"].encode()).hexdigest()
                if hit(f"doi-address:{address_key}", 3600) <= DOUBLE_OPT_IN_PER_ADDRESS_HOUR:
                    try:
                        double_opt_in_send(person=person, source=Source.WEBFORM)
                        sent = True
                    except NotSent:
                        pass  # the gateway said no (e.g. suppressed): the log shows why
        if form.autoresponder:
            enqueue(person=person, kind=Kind.AUTORESPONDER, template="webform_ack",
                    context={"form_name": form.name, "thank_you": form.thank_you_text},
                    idempotency_key=f"webform-ack:{form.pk}:{person.pk}:"
                                    f"{int(clock.now().timestamp()) // 3600}")
    return Submitted(person=person, double_opt_in_sent=sent)
