import pytest

from campaigns.optin import Actor, next_state, opt_in_change, staff_choices
from config import clock
from consents import ledger
from consents.models import ConsentEvent, Verification
from crm.errors import ProcessingStopped, ServiceError, TransitionForbidden
from crm.models import EmailOptIn, Person
from tests.factories import PersonFactory, StaffUserFactory

S = EmailOptIn
pytestmark = pytest.mark.django_db

# (current, actor, wanted) -> new state, or None when the move is forbidden
TABLE = [
    *[(state, Actor.CONTACT, None, S.OPT_OUT_CONTACT) for state in S.values],
    *[(state, Actor.WEBFORM, None,
       S.DOUBLE_OPT_IN if state == S.DOUBLE_OPT_IN else S.SINGLE_OPT_IN_WEBFORM)
      for state in S.values],
    *[(state, Actor.DOUBLE_OPT_IN, None,
       None if state in (S.OPT_OUT_USER, S.OPT_OUT_CONTACT) else S.DOUBLE_OPT_IN)
      for state in S.values],
    *[(state, Actor.STAFF, S.OPT_OUT_USER,
       S.OPT_OUT_CONTACT if state == S.OPT_OUT_CONTACT else S.OPT_OUT_USER)
      for state in S.values],
    (S.OPT_OUT_CONTACT, Actor.STAFF, "reverse_opt_out", None),
    (S.NONE, Actor.STAFF, S.DOUBLE_OPT_IN, None),
    (S.NONE, Actor.STAFF, S.SINGLE_OPT_IN_USER, None),
    (S.SINGLE_OPT_IN_WEBFORM, Actor.STAFF, S.DOUBLE_OPT_IN, None),
]


@pytest.mark.parametrize(("current", "actor", "wanted", "new"), TABLE)
def test_transition_table(current, actor, wanted, new):
    if new is None:
        with pytest.raises(TransitionForbidden):
            next_state(current, actor=actor, wanted=wanted)
    else:
        assert next_state(current, actor=actor, wanted=wanted).state == new


def test_staff_opt_out_and_its_reversal_restore_the_earlier_state_with_ledger_events():
    staff = StaffUserFactory()
    person = PersonFactory(email_opt_in=S.SINGLE_OPT_IN_USER)
    opt_in_change(person=person, actor=Actor.STAFF, wanted=S.OPT_OUT_USER, user=staff,
                  note="Asked on the phone", verified_by=Verification.STAFF_USER)
    assert Person.objects.get(pk=person.pk).email_opt_in == S.OPT_OUT_USER
    opt_in_change(person=person, actor=Actor.STAFF, wanted="reverse_opt_out", user=staff,
                  note="Opted out by mistake", verified_by=Verification.STAFF_USER)
    assert Person.objects.get(pk=person.pk).email_opt_in == S.SINGLE_OPT_IN_USER
    events = list(ConsentEvent.objects.filter(person_id=person.pk, subject="email_opt_in")
                  .order_by("seq"))
    assert [e.state for e in events] == [S.OPT_OUT_USER, S.SINGLE_OPT_IN_USER]
    assert ledger.verify_chain(events) == []


def test_contacts_own_opt_out_cannot_be_reversed_by_staff_but_a_new_signup_reopens_it():
    staff = StaffUserFactory()
    person = PersonFactory()
    opt_in_change(person=person, actor=Actor.CONTACT,
                  verified_by=Verification.EMAIL_CONFIRMATION)
    assert staff_choices(S.OPT_OUT_CONTACT) == []
    with pytest.raises(TransitionForbidden, match="Staff cannot reverse"):
        opt_in_change(person=person, actor=Actor.STAFF, wanted="reverse_opt_out", user=staff,
                      note="x", verified_by=Verification.STAFF_USER)
    opt_in_change(person=person, actor=Actor.WEBFORM, verified_by=Verification.WEB_FORM,
                  evidence={"form": "newsletter"})
    assert Person.objects.get(pk=person.pk).email_opt_in == S.SINGLE_OPT_IN_WEBFORM


def test_staff_moves_need_a_note_and_are_refused_on_a_stopped_record():
    staff = StaffUserFactory()
    person = PersonFactory()
    with pytest.raises(ServiceError, match="note"):
        opt_in_change(person=person, actor=Actor.STAFF, wanted=S.OPT_OUT_USER, user=staff,
                      verified_by=Verification.STAFF_USER)
    Person.objects.filter(pk=person.pk).update(processing_stopped_at=clock.now())
    with pytest.raises(ProcessingStopped):
        opt_in_change(person=person, actor=Actor.STAFF, wanted=S.OPT_OUT_USER, user=staff,
                      note="x", verified_by=Verification.STAFF_USER)
    # The contact's own opt-out always goes through.
    opt_in_change(person=person, actor=Actor.CONTACT, verified_by=Verification.NONE)
    assert Person.objects.get(pk=person.pk).email_opt_in == S.OPT_OUT_CONTACT
