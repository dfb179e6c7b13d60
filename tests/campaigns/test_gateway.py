"""The mail gateway as a table: every opt-in state × kind × acceptance setting × stopped ×
erased × suppressed, for decide() and for the queryset form (which must agree)."""

import itertools

import pytest

from campaigns import gateway
from campaigns.gateway import Kind, Reason
from config import clock
from consents.models import OptInAccepted
from crm import services
from crm.models import EmailOptIn, Person

pytestmark = pytest.mark.django_db


def expected(state, kind, accepted, stopped, erased, suppressed):
    """The rules of DESIGN.md, written out independently of the gateway's code."""
    if erased:
        return Reason.ERASED
    marketing_like = kind in (Kind.CAMPAIGN, Kind.AUTORESPONDER, Kind.WORKFLOW, Kind.ADHOC,
                              Kind.DOUBLE_OPT_IN, Kind.PORTAL_INVITE)
    if suppressed and marketing_like:
        return Reason.SUPPRESSED
    if stopped and marketing_like:
        return Reason.PROCESSING_STOPPED
    if marketing_like and state == "opt_out_contact":
        return Reason.OPTED_OUT_CONTACT
    if marketing_like and state == "opt_out_user":
        return Reason.OPTED_OUT_USER
    good = {"double": {"double_opt_in"},
            "double+user": {"double_opt_in", "single_opt_in_user"},
            "double+user+webform": {"double_opt_in", "single_opt_in_user",
                                    "single_opt_in_webform"}}[accepted]
    if kind in (Kind.CAMPAIGN, Kind.WORKFLOW) and state not in good:
        return Reason.OPT_IN_BELOW_ACCEPTED
    return Reason.ELIGIBLE


def plant(state, stopped, erased, suppressed, n):
    person = services.person_create(data={"email": f"p{n}@example.org"}, source="system")
    # Planting states directly: this table tests the gateway, not how people reach a state.
    Person.objects.filter(pk=person.pk).update(
        email_opt_in=state, processing_stopped_at=clock.now() if stopped else None,
        erased_at=clock.now() if erased else None)
    if suppressed:
        services.suppress_address(email=person.email, reason="erased")
    return Person.objects.get(pk=person.pk)


def test_decide_and_queryset_form_agree_on_every_combination():
    combos = list(itertools.product(EmailOptIn.values, [False, True], [False, True],
                                    [False, True]))
    people = {combo: plant(*combo, n) for n, combo in enumerate(combos)}
    for accepted in OptInAccepted.values:
        for kind in Kind.ALL:
            allowed_by_q = set(Person.objects.filter(gateway.eligible_q(kind, accepted=accepted))
                               .values_list("pk", flat=True))
            rechecked = gateway.recheck([p.pk for p in people.values()], kind)
            for (state, stopped, erased, suppressed), person in people.items():
                want = expected(state, kind, accepted, stopped, erased, suppressed)
                got = gateway.decide(person, kind, accepted=accepted)
                assert got.reason == want, (state, kind, accepted, stopped, erased, suppressed)
                assert got.allowed == (want == Reason.ELIGIBLE)
                # The queryset form selects everyone decide() allows, bar the suppression list
                # that recheck applies from the same rules.
                assert (person.pk in allowed_by_q) == (
                    want == Reason.ELIGIBLE or (want == Reason.SUPPRESSED and expected(
                        state, kind, accepted, stopped, erased, False) == Reason.ELIGIBLE))
                if accepted == "double":  # recheck reads the live setting (default: double)
                    assert rechecked[person.pk].reason == want


@pytest.mark.parametrize("email", ["", "not-an-address"])
def test_no_valid_address_blocks_every_kind(email):
    person = Person(email=email, email_opt_in="double_opt_in")
    for kind in Kind.ALL:
        assert gateway.decide(person, kind).reason == Reason.NO_VALID_ADDRESS


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError):
        gateway.decide(Person(email="a@example.org"), "newsletter")


def test_explain_endpoint_answers_for_email(staff_api):
    person = services.person_create(data={"email": "x@example.org",
                                          "email_opt_in": "single_opt_in_user"}, source="api")
    body = staff_api.get(f"/api/persons/{person.pk}/explain/").json()
    assert body["email"]["campaign"] == {"allowed": False, "reason": "opt_in_below_accepted"}
    assert body["email"]["adhoc"] == {"allowed": True, "reason": "eligible"}
    assert body["email"]["system"] == {"allowed": True, "reason": "eligible"}
    assert body["email"]["portal_invite"] == {"allowed": True, "reason": "eligible"}


def test_portal_invite_ignores_the_acceptance_level_but_not_opt_outs():
    # An invitation to the preference page is unsolicited mail, not marketing: people who never
    # opted in are invited, people who opted out (either way) are not.
    for state, reason in [("none", Reason.ELIGIBLE), ("single_opt_in_webform", Reason.ELIGIBLE),
                          ("opt_out_user", Reason.OPTED_OUT_USER),
                          ("opt_out_contact", Reason.OPTED_OUT_CONTACT)]:
        person = Person(email="a@example.org", email_opt_in=state)
        for accepted in OptInAccepted.values:
            assert gateway.decide(person, Kind.PORTAL_INVITE,
                                  accepted=accepted).reason == reason, (state, accepted)
