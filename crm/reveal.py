"""Revealing a sensitive value to an authorised staff member: the one path to plaintext.

Who may reveal is the field's business (FieldDefinition.reveal_groups, crm's registry); the log
and the decryption are encryption's. The log row is committed before the plaintext is returned.
"""

import base64
import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.utils.translation import gettext as _

from config.ratelimit import hit
from encryption import access_log
from encryption.cipher import DecryptionError
from encryption.values import open_value

from .errors import ServiceError
from .models import FieldDefinition, Person
from .registry import ENCRYPTED_CORE, SEALED, custom_context, custom_text, is_sealed
from .roles import ADMINS

logger = logging.getLogger(__name__)


class RevealDenied(ServiceError):
    status_code = 403
    code = "reveal_denied"


class RevealRateLimited(ServiceError):
    status_code = 429
    code = "reveal_rate_limited"


class NothingToReveal(ServiceError):
    status_code = 404
    code = "nothing_to_reveal"


def can_reveal(user, definition: FieldDefinition) -> bool:
    if not (user.is_active and user.is_staff and definition.is_encrypted):
        return False
    allowed = {g.pk for g in definition.reveal_groups.all()}
    return bool(allowed & set(user.groups.values_list("pk", flat=True)))


def revealable_fields(user) -> set[str]:
    """Keys of the encrypted fields this user may reveal (one query for the person page)."""
    groups = list(user.groups.values_list("pk", flat=True))
    if not (user.is_active and user.is_staff and groups):
        return set()
    return set(
        FieldDefinition.objects.filter(is_encrypted=True, reveal_groups__in=groups)
        .values_list("key", flat=True)
    )


class ValueUnreadable(ServiceError):
    status_code = 410
    code = "value_unreadable"


def _stored_plaintext(person: Person, key: str) -> str | None:
    """The field's value in full, or None when none is stored. Opened here, in memory: nothing
    leaves the server before the reveal is logged. A custom value stored before its field was
    switched to encrypted, and not sealed yet, is the value as stored."""
    if key in ENCRYPTED_CORE:
        sealed = getattr(person, key)
        if sealed is None:
            return None
        blob, context = sealed.blob, f"crm.person.{key}"
    else:
        value = (person.custom or {}).get(key)
        if not is_sealed(value):
            return None if value in (None, "") else custom_text(value)
        blob, context = base64.b64decode(value[SEALED]), custom_context(key)
    try:
        return open_value(blob, subject_id=person.pk, context=context)
    except DecryptionError:
        # Its data key was destroyed (erasure) or its master key is no longer configured.
        raise ValueUnreadable(_("This value can no longer be opened.")) from None


def _alert_admins(user, count: int) -> None:
    admins = get_user_model().objects.filter(groups__name=ADMINS, is_active=True)
    recipients = [a.email for a in admins if a.email]
    if not recipients:
        return
    try:
        # Names the staff member and the count only: no person, no value.
        send_mail(
            _("Consenso: unusual number of sensitive-field reveals"),
            _("%(user)s revealed %(count)d sensitive values within 10 minutes. "
              "Review the field access log.") % {"user": user.get_username(), "count": count},
            settings.DEFAULT_FROM_EMAIL, recipients,
        )
    except Exception as error:  # the reveal is logged; a mail server's failure must not undo it
        logger.error("reveal alert not sent: %s", error.__class__.__name__)


# Reveals are counted in two series of 10-minute windows, the second starting 5 minutes after
# the first: any burst within 5 minutes falls wholly in one window of one of them.
_ALERT_WINDOW, _ALERT_OFFSETS = 600, (0, 300)


def person_reveal(*, person: Person, field_key: str, user, reason: str, ip: str | None) -> str:
    """Return the plaintext of one sensitive field after logging the reveal.

    Raises RevealDenied (not in the field's reveal groups), ValidationError-like ServiceError
    for a missing reason, RevealRateLimited, NothingToReveal, ValueUnreadable (its key is gone:
    nothing is logged, as nothing is revealed). Call it outside a transaction so the log row is
    committed before the value is used.
    """
    definition = FieldDefinition.objects.filter(key=field_key, is_encrypted=True).first()
    if definition is None or not can_reveal(user, definition):
        raise RevealDenied(_("You may not reveal this field."))
    reason = (reason or "").strip()
    if not reason:
        raise ServiceError(_("Say why you need to see this value."), field="reason")
    if len(reason) > 500:
        raise ServiceError(_("Keep the reason under 500 characters."), field="reason")
    person = Person.objects.get(pk=person.pk)  # fresh: never reveal from a stale copy
    value = _stored_plaintext(person, field_key)  # in memory until the reveal is logged
    if value is None:
        raise NothingToReveal(_("No value is stored for this field."))
    if hit(f"reveal-hour:{user.pk}", 3600) > settings.REVEAL_RATE_LIMIT_PER_HOUR:
        raise RevealRateLimited(_("Too many reveals this hour; try again later."))
    roles = ", ".join(sorted(user.groups.values_list("name", flat=True)))
    access_log.append(user=user, role=roles, subject_id=person.pk, field=field_key,
                      reason=reason, ip=ip)
    counts = [hit(f"reveal-10min:{user.pk}", _ALERT_WINDOW, offset=offset)
              for offset in _ALERT_OFFSETS]
    if settings.REVEAL_ALERT_THRESHOLD in counts:  # once per window that reaches it
        _alert_admins(user, settings.REVEAL_ALERT_THRESHOLD)
    return value
