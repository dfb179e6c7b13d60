"""Mail scanners follow every link: GET and HEAD on every link of every email change nothing."""

import re

import pytest
from django.core import mail

from campaigns.conversations import email_compose
from campaigns.double_opt_in import double_opt_in_send
from campaigns.emails import enqueue
from campaigns.gateway import Kind
from consents.models import ConsentEvent
from crm.models import Person
from tests.factories import PersonFactory, StaffUserFactory

pytestmark = pytest.mark.django_db
LINK = re.compile(r"https?://[^\s\"'<>]+")


def snapshot():
    return (list(Person.objects.order_by("pk").values_list("pk", "email_opt_in",
                                                          "processing_stopped_at")),
            ConsentEvent.objects.count())


def test_get_and_head_on_every_emailed_link_change_nothing(
    client, settings, django_capture_on_commit_callbacks
):
    settings.SITE_URL = "http://testserver"
    person = PersonFactory(email_opt_in="single_opt_in_user")
    with django_capture_on_commit_callbacks(execute=True):
        double_opt_in_send(person=person, source="staff")
        enqueue(person=person, kind=Kind.AUTORESPONDER, template="webform_ack",
                context={"form_name": "F", "thank_you": "Thanks"}, idempotency_key="ack")
        email_compose(person=person, subject="Hello", body="See http://testserver/admin/",
                      user=StaffUserFactory())
    assert len(mail.outbox) == 3
    links = set()
    for message in mail.outbox:
        links |= set(LINK.findall(message.body))
        for content, _mime in getattr(message, "alternatives", []):
            links |= set(LINK.findall(content))
        links |= set(LINK.findall(message.extra_headers.get("List-Unsubscribe", "")))
    assert any("/confirm/" in link for link in links) and any("/u/" in link for link in links)
    before = snapshot()
    for link in sorted(links):
        path = link.removeprefix("http://testserver")
        for method in (client.get, client.head):
            assert method(path).status_code < 500, link
    assert snapshot() == before
