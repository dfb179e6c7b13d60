"""Reads of people: the filters shared by the API (and, later, segments and exports)."""

from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from django.utils.translation import gettext as _

from .models import EmailOptIn, Kind, Person, Region, Stage
from .services import normalise_email

_BOOL = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _choice(name, value, choices):
    if value not in choices:
        raise ValidationError({name: [_("Choose one of: %(c)s.") % {"c": ", ".join(choices)}]})
    return value


def _bool(name, value):
    try:
        return _BOOL[value.lower()]
    except KeyError:
        raise ValidationError({name: [_("Use true or false.")]}) from None


def person_filter(params, queryset: QuerySet | None = None) -> QuerySet:
    """Narrow people by the documented filters; a malformed value raises ValidationError.

    `params` is a mapping of filter name to string (a query string). Unknown names are ignored
    so that pagination and format parameters pass through.
    """
    qs = Person.objects.all() if queryset is None else queryset
    if value := params.get("kind"):
        qs = qs.filter(kind=_choice("kind", value, Kind.values))
    if value := params.get("stage"):
        qs = qs.filter(stage=_choice("stage", value, Stage.values))
    if value := params.get("region"):
        qs = qs.filter(region=_choice("region", value, Region.values))
    if value := params.get("owner"):
        if value == "none":
            qs = qs.filter(owner__isnull=True)
        elif value.isdigit():
            qs = qs.filter(owner_id=int(value))
        else:
            raise ValidationError({"owner": [_("Use a user id or 'none'.")]})
    if value := params.get("email"):
        qs = qs.filter(email=normalise_email(value))
    if value := params.get("email_opt_in"):
        states = [_choice("email_opt_in", v.strip(), EmailOptIn.values) for v in value.split(",")]
        qs = qs.filter(email_opt_in__in=states)
    if value := params.get("processing_stopped"):
        qs = qs.filter(processing_stopped_at__isnull=not _bool("processing_stopped", value))
    if value := params.get("erasure_requested"):
        qs = qs.filter(erasure_requested_at__isnull=not _bool("erasure_requested", value))
    if value := params.get("search"):
        for term in value.split()[:5]:
            qs = qs.filter(
                Q(first_name__icontains=term) | Q(last_name__icontains=term)
                | Q(email__icontains=term) | Q(company__icontains=term)
            )
    return qs
