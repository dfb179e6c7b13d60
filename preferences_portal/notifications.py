"""Telling people about their page: "your preference page was opened".

Called by the page on every view, so the common case costs one cache read and no query: the
cache remembers when a person was last checked, and only the first view in 24 hours (claimed with
an atomic `add`, so parallel views check once) reads the settings, the rule and the mail log. The
mail log is the backstop when the cache was cleared or is down.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import translation

from campaigns import emails, gateway
from campaigns.models import EmailMessage
from config import clock
from consents import rules
from consents.selectors import portal_settings

log = logging.getLogger(__name__)

WINDOW = timedelta(hours=24)
TEMPLATE = "portal_accessed"


def _cache_key(person_id) -> str:
    return f"portal-accessed:{person_id}"


def page_accessed(person, *, portal=None) -> bool:
    """Email `person` that their page was opened, at most once per 24 hours, when the
    notification rule admits them. Pass the settings row as `portal` if already read. Never
    raises: a notification must not break the page. Returns True when an email was queued.

    Sent as mail kind `system` (a security notice about their own data, like the confirmation
    of a change they made): an opt-out or a stop-processing request does not silence it; admins
    who want it to can say so in the rule, e.g. {"not": {"opt_in": ["opt_out_contact"]}}.
    """
    if portal is not None and not portal.notification_rule:
        return False
    now, key = clock.now(), _cache_key(person.pk)
    claim = None
    try:
        try:
            last = cache.get(key)
            if last is not None and now - last < WINDOW:
                return False
            # Parallel first views: one claims the check, the others leave it to it.
            if not cache.add(f"{key}:claim", 1, timeout=60):
                return False
            claim = f"{key}:claim"
            cache.set(key, now, timeout=int(WINDOW.total_seconds()))
        except Exception:  # noqa: BLE001 - cache down: the mail log below still limits it
            log.warning("page access notification: cache unavailable, using the mail log")
        return _notify(person, portal or portal_settings(), now)
    except Exception:  # noqa: BLE001 - the page is served whatever happens here
        log.exception("page access notification failed")
        return False
    finally:
        if claim:
            try:
                cache.delete(claim)
            except Exception:  # noqa: BLE001
                log.warning("page access notification: could not release the claim")


def _notify(person, portal, now) -> bool:
    if not portal.notification_rule:
        return False
    if not rules.to_predicate(portal.notification_rule)(person):
        return False
    if EmailMessage.objects.filter(person_id=person.pk, template=TEMPLATE,
                                   created_at__gt=now - WINDOW).exists():
        return False
    if not gateway.decide(person, gateway.Kind.SYSTEM).allowed:
        return False
    with transaction.atomic(), translation.override(person.language or settings.LANGUAGE_CODE):
        emails.enqueue(person=person, kind=gateway.Kind.SYSTEM, template=TEMPLATE,
                       context={"accessed_at": now},
                       idempotency_key=f"{TEMPLATE}:{person.pk}:{now:%Y%m%dT%H%M%S}")
    return True
