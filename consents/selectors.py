"""Reads of consent state."""

from .models import Consent


def consent_states(person) -> dict[str, str]:
    """Purpose key → state for one person (purposes never asked are absent: `unknown`)."""
    return dict(
        Consent.objects.filter(person=person).values_list("purpose__key", "state")
    )
