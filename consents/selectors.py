"""Reads of consent state."""

from .models import Consent


def consent_states(person) -> dict[str, str]:
    """Purpose key → state for one person (purposes never asked are absent: `unknown`)."""
    return dict(
        Consent.objects.filter(person=person).values_list("purpose__key", "state")
    )


def people_on_outdated_versions(purpose):
    """People whose current grant refers to an older text than the purpose's latest version
    (they are the ones to ask again)."""
    from crm.models import Person

    from .models import ConsentState

    latest = purpose.versions.order_by("-version").values_list("version", flat=True).first()
    return Person.objects.filter(
        consents__purpose=purpose, consents__state=ConsentState.GRANTED,
        consents__version__version__lt=latest or 0,
    )


def consent_settings():
    """The single settings row (created with defaults on first read)."""
    from .models import ConsentSettings

    row, _created = ConsentSettings.objects.get_or_create(pk=1)
    return row


def consent_report():
    """Counts per purpose × state (people never asked count as unknown) and per opt-in status."""
    from django.db.models import Count

    from crm.models import EmailOptIn, Person

    from .models import Consent, ConsentPurpose, ConsentState

    total = Person.objects.count()
    rows = {(r["purpose_id"], r["state"]): r["n"] for r in
            Consent.objects.values("purpose_id", "state").annotate(n=Count("id"))}
    purposes = []
    for purpose in ConsentPurpose.objects.order_by("position", "key"):
        counts = {s: rows.get((purpose.pk, s), 0) for s in ConsentState.values}
        counts["unknown"] += total - sum(counts.values())
        purposes.append((purpose, counts))
    opt_in = dict(Person.objects.values_list("email_opt_in").annotate(n=Count("id")))
    return {"total": total, "purposes": purposes,
            "opt_in": [(value, label, opt_in.get(value, 0)) for value, label in
                       EmailOptIn.choices]}


def portal_settings():
    """The single preference-page settings row (created with defaults on first read)."""
    from .models import PortalSettings

    row, _created = PortalSettings.objects.get_or_create(pk=1)
    return row
