import pytest
from django.core import mail

from campaigns.models import EmailMessage
from campaigns.optin import Actor, opt_in_change
from consents.models import Verification
from tests.factories import PersonFactory

pytestmark = pytest.mark.django_db


def test_adhoc_email_is_refused_after_opt_out_but_a_reply_to_the_contact_goes(
    staff_api, django_capture_on_commit_callbacks
):
    person = PersonFactory()
    opt_in_change(person=person, actor=Actor.CONTACT, verified_by=Verification.NONE)
    url = f"/api/persons/{person.pk}/emails/"
    refused = staff_api.post(url, {"subject": "Offer", "body": "Buy"}, format="json")
    assert refused.status_code == 409 and "opted_out_contact" in refused.json()["detail"]
    inbound = staff_api.post(f"/api/persons/{person.pk}/inbound/", {
        "message_id": "<q1@customer.example>", "subject": "Question", "body": "Where is it?"},
        format="json")
    assert inbound.status_code == 201
    with django_capture_on_commit_callbacks(execute=True):
        reply = staff_api.post(url, {"subject": "Re: Question", "body": "On its way.",
                                     "in_reply_to": "<q1@customer.example>"}, format="json")
    assert reply.status_code == 202 and reply.json()["kind"] == "reply"
    assert EmailMessage.objects.get(pk=reply.json()["id"]).status == "sent"
    assert mail.outbox[-1].extra_headers["In-Reply-To"] == "<q1@customer.example>"


def test_in_reply_to_someone_elses_message_is_not_a_reply(staff_api):
    person, other = PersonFactory(), PersonFactory()
    opt_in_change(person=person, actor=Actor.CONTACT, verified_by=Verification.NONE)
    staff_api.post(f"/api/persons/{other.pk}/inbound/", {
        "message_id": "<x@o.example>", "subject": "Hi", "body": "."}, format="json")
    response = staff_api.post(f"/api/persons/{person.pk}/emails/", {
        "subject": "Re", "body": "Sneaky", "in_reply_to": "<x@o.example>"}, format="json")
    assert response.status_code == 409


@pytest.mark.parametrize("payload", [{}, {"subject": "Hi"}, {"subject": "", "body": "x"}])
def test_bad_compose_gets_400(staff_api, payload):
    response = staff_api.post(f"/api/persons/{PersonFactory().pk}/emails/", payload,
                              format="json")
    assert response.status_code == 400
