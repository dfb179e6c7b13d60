import pytest

from campaigns.optin import Actor, opt_in_change
from consents.models import Verification
from crm.models import Person
from tests.factories import PersonFactory

pytestmark = pytest.mark.django_db


def test_staff_ui_offers_only_allowed_moves_and_applies_them(staff_client):
    person = PersonFactory(email_opt_in="single_opt_in_user")
    url = f"/admin/crm/person/{person.pk}/email-opt-in/"
    assert b"Email opt-in" in staff_client.get(f"/admin/crm/person/{person.pk}/change/").content
    page = staff_client.get(url).content.decode()
    assert 'value="opt_out_user"' in page and "double_opt_in" not in page.split("<form")[1]
    staff_client.post(url, {"move": "opt_out_user", "note": "Asked by phone"})
    assert Person.objects.get(pk=person.pk).email_opt_in == "opt_out_user"
    staff_client.post(url, {"move": "reverse_opt_out", "note": "Mistake"})
    assert Person.objects.get(pk=person.pk).email_opt_in == "single_opt_in_user"


def test_staff_ui_explains_why_a_contacts_own_opt_out_cannot_be_reversed(staff_client):
    person = PersonFactory()
    opt_in_change(person=person, actor=Actor.CONTACT, verified_by=Verification.NONE)
    url = f"/admin/crm/person/{person.pk}/email-opt-in/"
    page = staff_client.get(url).content.decode()
    assert "Staff cannot reverse" in page and 'name="move"' not in page
    staff_client.post(url, {"move": "reverse_opt_out", "note": "x"})
    assert Person.objects.get(pk=person.pk).email_opt_in == "opt_out_contact"


def test_send_double_opt_in_action_counts_by_reason(staff_client):
    ok = PersonFactory()
    out = PersonFactory()
    opt_in_change(person=out, actor=Actor.CONTACT, verified_by=Verification.NONE)
    response = staff_client.post("/admin/crm/person/", {
        "action": "send_double_opt_in", "_selected_action": [str(ok.pk), str(out.pk)],
    }, follow=True)
    text = response.content.decode()
    assert "opted_out_contact 1" in text and "sent 1" in text
