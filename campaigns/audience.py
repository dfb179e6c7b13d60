"""Who a campaign is for, and the dry run that explains who it will not reach and why.

The audience is the union of the campaign's lists, narrowed by its segment rule when both are
given (only the rule when no list is chosen; nobody when neither is). The gateway's queryset form
(gateway.reason_q / eligible_q) sorts it: the dry run counts each blocking reason in the order
`gateway.decide` applies them, so every person is counted once, under the reason `decide` would
give.
"""

from django.db.models import Case, CharField, Count, Exists, OuterRef, Q, Value, When

from consents import rules
from consents.selectors import consent_settings
from crm.models import ListMembership, Person, SuppressedAddress
from crm.services import address_hasher

from . import gateway
from .gateway import Kind, Reason
from .models import Campaign

# decide()'s order; `suppressed` sits between the address check and the rest.
ORDER = (Reason.ERASED, Reason.NO_VALID_ADDRESS, Reason.SUPPRESSED,
         Reason.PROCESSING_STOPPED, Reason.OPTED_OUT_CONTACT, Reason.OPTED_OUT_USER,
         Reason.OPT_IN_BELOW_ACCEPTED, Reason.ELIGIBLE)
_SQL_REASONS = tuple(r for r in ORDER if r not in (Reason.SUPPRESSED, Reason.ELIGIBLE))
_AFTER_SUPPRESSED = ORDER[ORDER.index(Reason.SUPPRESSED) + 1:]


def audience_q(campaign: Campaign, *, list_ids=None, rule=None) -> Q:
    """Everyone the campaign addresses, before the gateway: lists ∪, then ∩ rule."""
    list_ids = list(campaign.lists.values_list("pk", flat=True)) if list_ids is None \
        else list(list_ids)
    rule = campaign.segment_rule if rule is None else rule
    if not list_ids and not rule:
        return Q(pk__in=[])
    q = Q()
    if list_ids:
        q &= Q(Exists(ListMembership.objects.filter(
            person=OuterRef("pk"), marketing_list_id__in=list_ids)))
    if rule:
        q &= rules.to_q(rule)
    return q


def audience(campaign: Campaign):
    return Person.objects.filter(audience_q(campaign))


def eligible(campaign: Campaign, *, accepted: str | None = None):
    """The people the campaign will be materialised for: the audience the gateway's queryset
    form allows (the suppression list is applied at hand-off, see gateway.eligible_q)."""
    return Person.objects.filter(audience_q(campaign)
                                 & gateway.eligible_q(Kind.CAMPAIGN, accepted=accepted))


def _reason_case(accepted: str) -> Case:
    by_reason = gateway.reason_q(Kind.CAMPAIGN, accepted=accepted)
    return Case(*(When(by_reason[r], then=Value(r)) for r in _SQL_REASONS if r in by_reason),
                default=Value(Reason.ELIGIBLE), output_field=CharField())


def _suppressed_after_sql_reasons(people) -> list[tuple]:
    """(person id, reason) of the people in `people` (annotated with their SQL reason) whom the
    suppression list blocks before that reason would: decide() checks it right after the
    address. One pass over their addresses, and none when the list is empty."""
    hashes = set(SuppressedAddress.objects.values_list("address_hash", flat=True))
    if not hashes:
        return []
    hasher = address_hasher()
    return [(pk, reason) for pk, email, reason in people.filter(reason__in=_AFTER_SUPPRESSED)
            .values_list("pk", "email", "reason").iterator(chunk_size=5000)
            if hasher(email) in hashes]


def reason_counts(campaign: Campaign, *, accepted: str) -> dict:
    """Reason → people, in one grouped query; the suppression list is not applied (`suppressed`
    stays 0): that needs the addresses' keyed hashes, computed outside the database."""
    counts = dict.fromkeys(ORDER, 0)
    people = audience(campaign).annotate(reason=_reason_case(accepted))
    for row in people.values("reason").annotate(n=Count("pk")).order_by():
        counts[row["reason"]] += row["n"]
    return counts


def dry_run(campaign: Campaign) -> dict:
    """{"total": n, "reasons": {reason: n for every reason code}, "accepted": level}: the
    audience as the gateway would decide for it now. One grouped query, plus a pass over the
    addresses still in the running when a suppression list exists."""
    accepted = consent_settings().opt_in_accepted
    counts = reason_counts(campaign, accepted=accepted)
    people = audience(campaign).annotate(reason=_reason_case(accepted))
    for _pk, reason in _suppressed_after_sql_reasons(people):
        counts[reason] -= 1
        counts[Reason.SUPPRESSED] += 1
    return {"total": sum(counts.values()), "reasons": counts, "accepted": accepted}


def people_for_reason(campaign: Campaign, reason: str):
    """The people behind one count of the dry run (a queryset of Person)."""
    if reason not in ORDER:
        raise ValueError(f"Unknown reason {reason!r}.")
    accepted = consent_settings().opt_in_accepted
    people = audience(campaign).annotate(reason=_reason_case(accepted))
    if reason in _SQL_REASONS[:2]:  # decided before the suppression list is looked at
        return Person.objects.filter(pk__in=people.filter(reason=reason).values("pk"))
    ids = [pk for pk, _reason in _suppressed_after_sql_reasons(people)]
    if reason == Reason.SUPPRESSED:
        return Person.objects.filter(pk__in=ids)
    return Person.objects.filter(pk__in=people.filter(reason=reason).values("pk")).exclude(
        pk__in=ids)


def parse_reason_link(value: str):
    """'<campaign id>:<reason>' (the link behind a dry-run count) → (campaign, reason), or
    None when it is malformed or names no campaign."""
    campaign_id, _sep, reason = (value or "").partition(":")
    if not campaign_id.isdigit() or reason not in ORDER:
        return None
    campaign = Campaign.objects.filter(pk=int(campaign_id)).first()
    return (campaign, reason) if campaign else None
