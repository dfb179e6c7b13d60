"""The only writers of consent purposes, policy versions, consent state and the ledger.

Every change of state is one transaction: the person's chain is locked, the ledger event is
appended, the current state is updated, and for a storage consent the bound field is cleared and
locked (revoke) or unlocked (grant) through crm's person service.
"""

import hashlib
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from config import clock
from crm import services as crm_services
from crm.errors import ServiceError

from . import ledger, rules
from .models import (
    Consent,
    ConsentEvent,
    ConsentPurpose,
    ConsentPurposeVersion,
    ConsentState,
    PolicyVersion,
    PurposeKind,
    Source,
    Verification,
)


def text_hash(title: str, text: str) -> str:
    return hashlib.sha256(f"{title}\n\n{text}".encode()).hexdigest()


# -- purposes and policy --------------------------------------------------------------------------

# fn(purpose) -> None, called inside purpose_create's transaction. Apps above consents register
# here in their AppConfig.ready() (the preference page invites people to a new purpose) so that
# consents never imports them.
purpose_created_hooks: list = []

def purpose_clean(purpose: ConsentPurpose) -> None:
    errors = {}
    if purpose.kind == PurposeKind.DATA_STORAGE:
        if purpose.field_id is None:
            errors["field"] = [_("A storage consent is bound to one field.")]
        elif not purpose.field.is_pii:
            errors["field"] = [_("Bind storage consents to personal-data fields.")]
    elif purpose.field_id is not None:
        errors["field"] = [_("Only storage consents are bound to a field.")]
    if purpose.visibility_rule:
        try:
            rules.validate(purpose.visibility_rule)
        except ValidationError as error:
            errors["visibility_rule"] = error.messages
    if errors:
        raise ValidationError(errors)


@transaction.atomic
def purpose_create(*, key: str, name: str, kind: str, title: str, text: str, field=None,
                   default_selected: bool = False, visibility_rule=None,
                   ttl_days: int | None = None) -> ConsentPurpose:
    purpose = ConsentPurpose(key=key, name=name, kind=kind, field=field,
                             default_selected=default_selected,
                             visibility_rule=visibility_rule or None, ttl_days=ttl_days)
    purpose.full_clean()
    purpose_clean(purpose)
    purpose.save()
    purpose_publish_version(purpose=purpose, title=title, text=text)
    for hook in purpose_created_hooks:
        hook(purpose)
    return purpose


def purpose_save(*, purpose: ConsentPurpose) -> ConsentPurpose:
    """Save a purpose's settings (not its text: publish a version for that)."""
    purpose.full_clean()
    purpose_clean(purpose)
    purpose.save()
    return purpose


def purpose_publish_version(*, purpose: ConsentPurpose, title: str, text: str,
                            effective_at=None) -> ConsentPurposeVersion:
    """Publish the text contacts see. An unchanged text returns the current version."""
    if not title.strip() or not text.strip():
        raise ValidationError({"text": [_("A consent text needs a title and a text.")]})
    digest = text_hash(title.strip(), text.strip())
    with transaction.atomic():
        current = purpose.versions.select_for_update().order_by("-version").first()
        if current is not None and current.text_hash == digest:
            return current
        return ConsentPurposeVersion.objects.create(
            purpose=purpose, version=(current.version + 1) if current else 1,
            title=title.strip(), text=text.strip(), text_hash=digest,
            effective_at=effective_at or clock.now(),
        )


def current_version(purpose: ConsentPurpose) -> ConsentPurposeVersion:
    version = purpose.versions.order_by("-version").first()
    if version is None:
        raise ServiceError(_("This purpose has no published text yet."))
    return version


def policy_publish(*, title: str, text: str) -> PolicyVersion:
    digest = text_hash(title.strip(), text.strip())
    with transaction.atomic():
        current = PolicyVersion.objects.select_for_update().order_by("-version").first()
        if current is not None and current.text_hash == digest:
            return current
        return PolicyVersion.objects.create(
            version=(current.version + 1) if current else 1, title=title.strip(),
            text=text.strip(), text_hash=digest, effective_at=clock.now(),
        )


def settings_update(**changes):
    """Change consent settings (admins). Unknown names or bad values raise ValidationError."""
    from .selectors import consent_settings

    row = consent_settings()
    for name, value in changes.items():
        setattr(row, name, value)
    row.full_clean()
    row.save()
    return row


def segment_save(*, segment):
    try:
        rules.validate(segment.rule)
    except ValidationError as error:
        raise ValidationError({"rule": error.messages}) from None
    segment.full_clean()
    segment.save()
    return segment


# -- consent state --------------------------------------------------------------------------------

def _evidence(*, verified_by: str, actor, note: str, extra: dict | None) -> dict:
    evidence = dict(extra or {})
    if verified_by in (Verification.STAFF_USER, Verification.API_TOKEN):
        if not (note or "").strip():
            raise ServiceError(_("Say how the person gave this answer (a note is required)."),
                               field="note")
        if actor is None or not getattr(actor, "pk", None):
            raise ServiceError(_("A staff-recorded answer needs the staff member."))
        evidence.update(user_id=actor.pk, note=note.strip()[:500])
    return evidence


# fn(person, purpose, state) -> None, called inside _record's transaction after every change of
# consent state (grant, revoke, request, lapse). Apps above consents register here in their
# AppConfig.ready(): campaigns deletes past tracking events when tracking consent is revoked, in
# the same transaction as the revocation, so the two never disagree.
consent_changed_hooks: list = []


def _record(*, person, purpose: ConsentPurpose, state: str, action: str, source: str,
            verified_by: str, evidence: dict | None, actor, note: str, ip: str | None,
            user_agent: str | None) -> Consent:
    if source not in Source.values or verified_by not in Verification.values:
        raise ServiceError(_("Unknown source or verification."))
    evidence = _evidence(verified_by=verified_by, actor=actor, note=note, extra=evidence)
    now = clock.now()
    with transaction.atomic():
        ledger.lock_chain(person.pk)
        version = current_version(purpose)
        consent, _created = Consent.objects.select_for_update().get_or_create(
            person_id=person.pk, purpose=purpose,
            defaults={"state": ConsentState.UNKNOWN, "updated_at": now},
        )
        event = ledger.append(ConsentEvent(
            person_id=person.pk, purpose_version=version, subject=purpose.key, action=action,
            state=state, source=source, verified_by=verified_by, evidence=evidence,
            ip_hash=ledger.keyed_hash(ip, purpose="ip"),
            ua_hash=ledger.keyed_hash(user_agent, purpose="ua"), at=now,
        ))
        consent.state, consent.version, consent.last_event, consent.updated_at = (
            state, version, event, now)
        consent.expires_at = (now + timedelta(days=purpose.ttl_days)
                              if state == ConsentState.GRANTED and purpose.ttl_days else None)
        consent.save()
        if purpose.kind == PurposeKind.DATA_STORAGE and purpose.field_id:
            # GDPR: without storage consent the value must go, and stay gone until a new grant.
            if state == ConsentState.REVOKED:
                crm_services.person_lock_field(person_id=person.pk, field=purpose.field.key,
                                               actor=actor, source=source)
            elif state == ConsentState.GRANTED:
                crm_services.person_unlock_field(person_id=person.pk, field=purpose.field.key,
                                                 actor=actor, source=source)
        for hook in consent_changed_hooks:
            hook(person, purpose, state)
    return consent


def consent_grant(*, person, purpose, source, verified_by, evidence=None, actor=None,
                  note="", ip=None, user_agent=None) -> Consent:
    """Record that the person agreed to the purpose's current text.

    Callers pass how the answer was verified: an email confirmation (evidence: message id), a
    web form (form slug), or a staff member / API token (then `actor` and a `note` are required).
    """
    return _record(person=person, purpose=purpose, state=ConsentState.GRANTED, action="grant",
                   source=source, verified_by=verified_by, evidence=evidence, actor=actor,
                   note=note, ip=ip, user_agent=user_agent)


def consent_revoke(*, person, purpose, source, verified_by, evidence=None, actor=None,
                   note="", ip=None, user_agent=None) -> Consent:
    """Record a withdrawal. A storage consent's field is cleared and locked in the same
    transaction."""
    return _record(person=person, purpose=purpose, state=ConsentState.REVOKED, action="revoke",
                   source=source, verified_by=verified_by, evidence=evidence, actor=actor,
                   note=note, ip=ip, user_agent=user_agent)


def consent_request(*, person, purpose, source, verified_by=Verification.NONE, evidence=None,
                    actor=None, note="", ip=None, user_agent=None) -> Consent:
    """Record that the person was asked (state `pending` until they answer)."""
    return _record(person=person, purpose=purpose, state=ConsentState.PENDING, action="request",
                   source=source, verified_by=verified_by, evidence=evidence, actor=actor,
                   note=note, ip=ip, user_agent=user_agent)


def consent_expire_due(*, limit: int = 500) -> int:
    """Let grants whose time-to-live has passed lapse (state revoked, action `expire`).

    Run periodically (consents.tasks.expire_consents). A lapsed storage consent clears and
    locks its field like any revocation. Returns how many lapsed.
    """
    due = list(Consent.objects.filter(state=ConsentState.GRANTED, expires_at__lte=clock.now())
               .select_related("purpose", "person")[:limit])
    for consent in due:
        _record(person=consent.person, purpose=consent.purpose, state=ConsentState.REVOKED,
                action="expire", source=Source.SYSTEM, verified_by=Verification.NONE,
                evidence={"expired_at": consent.expires_at.isoformat()}, actor=None, note="",
                ip=None, user_agent=None)
    return len(due)


# -- preference-page settings --------------------------------------------------------------------

# fn(settings_row, actor) -> None, called inside portal_settings_update's transaction when the
# page goes from disabled to enabled (the preference page registers its invitation run here).
portal_enabled_hooks: list = []
PORTAL_SETTINGS = ("enabled", "access_rule", "notification_rule", "email_footer",
                   "confirmation_hours", "unconfirmed_lead_retention_months")
PORTAL_RULES = ("access_rule", "notification_rule")


def portal_settings_clean(row) -> None:
    """Raise ValidationError with field errors for a settings row that may not be saved: each
    rule must fit the rule language (an empty rule is stored as {})."""
    errors = {}
    for name in PORTAL_RULES:
        rule = getattr(row, name)
        if rule is None or rule == "" or rule == {}:
            setattr(row, name, {})
            continue
        try:
            rules.validate(rule)
        except ValidationError as error:
            errors[name] = error.messages
    if isinstance(row.confirmation_hours, int) and row.confirmation_hours < 1:
        errors["confirmation_hours"] = [_("At least one hour.")]
    if row.unconfirmed_lead_retention_months == 0:
        errors["unconfirmed_lead_retention_months"] = [
            _("At least one month, or empty to keep them.")]
    try:
        row.full_clean()
    except ValidationError as error:
        for name, messages in error.message_dict.items():
            errors.setdefault(name, []).extend(messages)
    if errors:
        raise ValidationError(errors)


def portal_settings_update(*, actor=None, **changes):
    """Change the preference-page settings (admins). Unknown names or bad values raise
    ValidationError with field errors. Enabling the page calls `portal_enabled_hooks` in the same
    transaction (invitations go out after the commit); the row lock makes two admins enabling
    at once start one run."""
    from .models import PortalSettings
    from .selectors import portal_settings

    unknown = sorted(set(changes) - set(PORTAL_SETTINGS))
    if unknown:
        raise ValidationError({name: [_("Unknown setting.")] for name in unknown})
    portal_settings()  # creates the row on first use, outside the lock below
    with transaction.atomic():
        row = PortalSettings.objects.select_for_update().get(pk=1)
        was_enabled = row.enabled
        for name, value in changes.items():
            setattr(row, name, value)
        portal_settings_clean(row)
        row.save()
        if row.enabled and not was_enabled:
            for hook in portal_enabled_hooks:
                hook(row, actor)
    return row
