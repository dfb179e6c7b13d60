import datetime
import re

import pytest
from django.core import mail

from campaigns.double_opt_in import NotSent, double_opt_in_send
from campaigns.optin import Actor, opt_in_change
from config import clock
from consents.models import ConsentEvent, Verification
from crm.models import Person
from tests.factories import PersonFactory

pytestmark = pytest.mark.django_db


def send_and_get_link(person, capture):
    with capture(execute=True):
        double_opt_in_send(person=person, source="staff")
    message = mail.outbox[-1]
    assert message.to == [person.email]
    return re.search(r"(https?://\S+/confirm/\S+/)", message.body).group(1)


def test_round_trip_through_the_real_email(client, django_capture_on_commit_callbacks, settings):
    settings.SITE_URL = "https://crm.example.org"
    person = PersonFactory(email_opt_in="single_opt_in_user")
    link = send_and_get_link(person, django_capture_on_commit_callbacks)
    assert link.startswith("https://crm.example.org/confirm/")
    path = link.removeprefix("https://crm.example.org")
    # Mail scanners: GET and HEAD show the page and change nothing.
    page = client.get(path)
    assert page.status_code == 200 and b"Yes, send me emails" in page.content
    assert "no-store" in page["Cache-Control"] and page["Referrer-Policy"] == "no-referrer"
    assert client.head(path).status_code == 200
    assert Person.objects.get(pk=person.pk).email_opt_in == "single_opt_in_user"
    done = client.post(path, HTTP_USER_AGENT="Mozilla/5.0")
    assert done.status_code == 200
    assert Person.objects.get(pk=person.pk).email_opt_in == "double_opt_in"
    event = ConsentEvent.objects.get(person_id=person.pk, subject="email_opt_in")
    assert event.verified_by == "email_confirmation" and event.source == "double_opt_in"
    assert event.evidence["message_id"] == mail.outbox[-1].extra_headers.get(
        "Message-ID", event.evidence["message_id"])
    assert event.ip_hash and event.ua_hash
    # Single use: a replay changes nothing and says so.
    assert client.post(path).status_code == 404


def test_expired_link_is_refused_at_the_limit_plus_one_second(client,
                                                              django_capture_on_commit_callbacks):
    person = PersonFactory()
    link = send_and_get_link(person, django_capture_on_commit_callbacks)
    path = "/" + link.split("/", 3)[3]
    sent_at = clock.now()
    with clock.frozen(sent_at + datetime.timedelta(days=7, seconds=-5)):
        assert client.get(path).status_code == 200
    with clock.frozen(sent_at + datetime.timedelta(days=7, seconds=5)):
        assert client.post(path).status_code == 404
    assert Person.objects.get(pk=person.pk).email_opt_in == "none"


def test_an_opt_out_after_sending_makes_the_link_useless(client,
                                                         django_capture_on_commit_callbacks):
    person = PersonFactory()
    link = send_and_get_link(person, django_capture_on_commit_callbacks)
    opt_in_change(person=person, actor=Actor.CONTACT, verified_by=Verification.NONE)
    refused = client.post("/" + link.split("/", 3)[3])
    assert refused.status_code == 409 and b"opted out" in refused.content
    assert Person.objects.get(pk=person.pk).email_opt_in == "opt_out_contact"


def test_not_sent_to_opted_out_or_confirmed_people(staff_api):
    out = PersonFactory()
    opt_in_change(person=out, actor=Actor.CONTACT, verified_by=Verification.NONE)
    with pytest.raises(NotSent):
        double_opt_in_send(person=out, source="staff")
    response = staff_api.post(f"/api/persons/{out.pk}/double-opt-in/")
    assert response.status_code == 409
    ok = staff_api.post(f"/api/persons/{PersonFactory().pk}/double-opt-in/")
    assert ok.status_code == 202 and ok.json()["status"] == "queued"


@pytest.mark.parametrize("token", ["x", "A" * 43, "../../etc", ""])
def test_random_tokens_are_refused(client, token):
    if token:
        assert client.get(f"/confirm/{token}/").status_code == 404


def test_whole_list_gets_the_request_except_those_who_must_not(
    staff_client, django_capture_on_commit_callbacks
):
    from campaigns.models import DoubleOptInBatch
    from crm import services as crm_services
    from tests.factories import MarketingListFactory

    mlist = MarketingListFactory()
    fresh, opted_out, stopped = PersonFactory(), PersonFactory(), PersonFactory()
    confirmed = PersonFactory()
    opt_in_change(person=opted_out, actor=Actor.CONTACT, verified_by=Verification.NONE)
    crm_services.marketing_list_add(marketing_list=mlist, source="staff", person_ids=[
        p.pk for p in (fresh, opted_out, stopped, confirmed)])
    Person.objects.filter(pk=stopped.pk).update(processing_stopped_at=clock.now())
    Person.objects.filter(pk=confirmed.pk).update(email_opt_in="double_opt_in")
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post("/admin/crm/marketinglist/", {
            "action": "send_double_opt_in_to_list", "_selected_action": [mlist.pk]})
    batch = DoubleOptInBatch.objects.get()
    assert batch.counts == {"sent": 1, "opted_out_contact": 1, "processing_stopped": 1,
                            "already_confirmed": 1}
    assert [m.to for m in mail.outbox] == [[fresh.email]]


def test_confirmation_post_works_from_a_no_referrer_page_with_csrf_checks_on(
    django_capture_on_commit_callbacks,
):
    from django.test import Client

    person = PersonFactory()
    link = send_and_get_link(person, django_capture_on_commit_callbacks)
    browser = Client(enforce_csrf_checks=True)
    response = browser.post("/" + link.split("/", 3)[3], HTTP_ORIGIN="null")
    assert response.status_code == 200
    assert Person.objects.get(pk=person.pk).email_opt_in == "double_opt_in"
