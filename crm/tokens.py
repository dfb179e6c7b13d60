"""Per-person link tokens (preference page, one-click unsubscribe).

Modelled on django.contrib.auth's PasswordResetTokenGenerator: a keyed hash over state that
changes when the links must die (`portal_key_version`), compared in constant time. The token
holds the person's random id and 128 bits of HMAC — no personal data.
"""

import uuid

from django.utils.crypto import constant_time_compare, salted_hmac

from .models import Person

TAG_HEX = 32  # 128 bits


def _tag(person_id, version: int, purpose: str) -> str:
    return salted_hmac(f"consenso.person-link.{purpose}", f"{person_id}:{version}",
                       algorithm="sha256").hexdigest()[:TAG_HEX]


def make_token(person: Person, *, purpose: str) -> str:
    return f"{person.pk.hex}-{_tag(person.pk, person.portal_key_version, purpose)}"


def person_for_token(token: str, *, purpose: str, people=None) -> Person | None:
    """The person a valid token names, else None (malformed, forged, or links revoked).
    `people`: the queryset to read them from, e.g. with what the caller's page needs annotated
    in the same query (default: every person, all columns)."""
    raw_id, sep, tag = (token or "").partition("-")
    if not sep or len(tag) != TAG_HEX:
        return None
    try:
        person_id = uuid.UUID(hex=raw_id)
    except ValueError:
        return None
    try:
        person = (Person.objects if people is None else people).get(pk=person_id)
    except Person.DoesNotExist:
        return None
    expected = _tag(person.pk, person.portal_key_version, purpose)
    return person if constant_time_compare(tag, expected) else None
