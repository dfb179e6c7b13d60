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


# -- engagement tracking ------------------------------------------------------------------------
# One rule, read two ways (a set-based query for many people, a predicate for one answer shown by
# the explain endpoint): the person may be tracked when no active engagement-tracking purpose
# says no. Granted says yes, revoked says no, and unknown / pending / never asked falls back to
# the admins' `tracking_default_when_unknown`. With no active tracking purpose, the setting alone
# decides. People whose processing is stopped or who were erased are never tracked (GDPR art. 18:
# an opened email is processing too).

def tracking_state_allows(state: str, *, default: bool) -> bool:
    """Whether one engagement-tracking answer allows tracking (`default`: the admins' setting
    for people who never answered)."""
    from .models import ConsentState

    if state == ConsentState.GRANTED:
        return True
    if state == ConsentState.REVOKED:
        return False
    return default


def tracking_allowed_ids(person_ids) -> set:
    """The ids among `person_ids` whose opens and clicks may be recorded now, in one query."""
    from django.db.models import BooleanField, Exists, OuterRef, Q, Subquery, Value
    from django.db.models.functions import Coalesce

    from crm.models import Person

    from .models import ConsentPurpose, ConsentSettings, ConsentState, PurposeKind

    person_ids = list(person_ids)
    if not person_ids:
        return set()
    purposes = ConsentPurpose.objects.filter(active=True, kind=PurposeKind.ENGAGEMENT_TRACKING)
    answer = Consent.objects.filter(person_id=OuterRef(OuterRef("pk")), purpose_id=OuterRef("pk"))
    # The settings row may not exist yet: the model's default (off) applies then.
    default = Coalesce(
        Subquery(ConsentSettings.objects.filter(pk=1)
                 .values("tracking_default_when_unknown")[:1]),
        Value(False), output_field=BooleanField())
    revoked = Exists(purposes.filter(Exists(answer.filter(state=ConsentState.REVOKED))))
    not_granted = Exists(purposes.exclude(Exists(answer.filter(state=ConsentState.GRANTED))))
    # "Every purpose granted" must not hold vacuously: with no active purpose, the setting decides.
    all_granted = Q(Exists(purposes)) & ~Q(not_granted)
    allowed = (Person.objects.filter(pk__in=person_ids, erased_at__isnull=True,
                                     processing_stopped_at__isnull=True)
               .filter(~Q(revoked) & (Q(default) | all_granted)))
    return set(allowed.order_by().values_list("pk", flat=True))


def tracking_allowed(person) -> bool:
    """Whether this person's opens and clicks may be recorded now (see tracking_allowed_ids)."""
    return person.pk in tracking_allowed_ids([person.pk])
