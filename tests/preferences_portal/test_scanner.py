"""Mail scanners follow every link: GET and HEAD on every link of every email the preference
page sends (and of the pages those links open) change nothing."""

import re

import pytest
from django.core import mail

from consents.models import Consent, ConsentEvent
from crm.models import ListMembership, Person, RightsRequest
from preferences_portal.models import PendingChange
from tests.preferences_portal.conftest import LINK

pytestmark = pytest.mark.django_db
HREF = re.compile(r'href="([^"#?][^"]*)"')


def snapshot():
    return (list(Person.objects.order_by("pk").values_list(
                "pk", "email_opt_in", "processing_stopped_at", "erasure_requested_at")),
            ConsentEvent.objects.count(), Consent.objects.count(),
            ListMembership.objects.count(), RightsRequest.objects.count(),
            list(PendingChange.objects.order_by("pk").values_list("pk", "state")))


def test_get_and_head_on_every_link_of_every_portal_email_change_nothing(
        client, person, page_url, django_capture_on_commit_callbacks):
    lists = [m.marketing_list_id for m in ListMembership.objects.filter(person=person)]
    with django_capture_on_commit_callbacks(execute=True):
        client.post(page_url, {"action": "save", "consent-tracking": "revoked", "opt_out": "on",
                               "processing": "stop", "erasure": "on", "lists_shown": lists})
    with django_capture_on_commit_callbacks(execute=True):
        client.post(page_url, {"action": "download"})
    sent = [m for m in mail.outbox if "/confirm-change/" in m.body]
    assert len(sent) == 2
    links = set()
    for message in sent:
        links |= set(LINK.findall(message.body))
        for content, _mime in getattr(message, "alternatives", []):
            links |= set(LINK.findall(content))
        assert "List-Unsubscribe" not in message.extra_headers  # system mail, not marketing
    before = snapshot()
    seen, queue = set(), sorted(link.removeprefix("http://testserver") for link in links)
    while queue:  # follow the links the opened pages show too (language switch, downloads)
        path = queue.pop()
        if path in seen:
            continue
        seen.add(path)
        for method in (client.get, client.head):
            response = method(path)
            assert response.status_code < 500, path
        if response.get("Content-Type", "").startswith("text/html"):
            body = client.get(path).content.decode()
            queue += [href if href.startswith("/") else path.split("?")[0] + href
                      for href in HREF.findall(body)]
    assert any("/confirm-change/" in path for path in seen)
    assert snapshot() == before
