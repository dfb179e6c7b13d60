"""Real commits on PostgreSQL: twenty parallel clicks apply a change once, and a submission made
while the broker (Redis) is down is saved, answered, and its email sent later by the sweeper."""

import threading
from datetime import timedelta

import pytest
from django.core import mail
from django.db import connection

from campaigns.models import EmailMessage
from config import celery_app, clock
from consents.models import ConsentEvent
from crm.models import Person
from preferences_portal import services
from preferences_portal.models import PendingChange
from tests.preferences_portal.conftest import confirm_links

pytestmark = pytest.mark.django_db(transaction=True)
CLICKS = 20


def test_twenty_parallel_clicks_apply_the_change_once(person):
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL")
    services.pending_change_submit(person=person, wanted={
        "consents": {"tracking": "granted"}, "processing": "stop"})
    token = confirm_links(mail.outbox)[-1].rstrip("/").rsplit("/", 1)[1]
    start = threading.Barrier(CLICKS)
    outcomes = []

    def click():
        try:
            start.wait()
            services.pending_change_confirm(token=token)
            outcomes.append("won")
        except services.ChangeNotPending as closed:
            outcomes.append(closed.state)
        finally:
            connection.close()

    threads = [threading.Thread(target=click) for _ in range(CLICKS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    # One click applied it; every other one found it already applied.
    assert sorted(outcomes) == ["applied"] * (CLICKS - 1) + ["won"]
    assert len(outcomes) == CLICKS
    assert ConsentEvent.objects.filter(person_id=person.pk, subject="tracking").count() == 1
    from crm.models import RightsRequest

    assert RightsRequest.objects.filter(person_ref=person.pk, kind="restriction").count() == 1
    assert PendingChange.objects.get().state == PendingChange.State.APPLIED


@pytest.fixture
def broker_down():
    """Tasks go to a broker on a closed port, as when Redis is down."""
    conf = celery_app.conf
    previous = conf.task_always_eager, conf.broker_url
    conf.task_always_eager, conf.broker_url = False, "redis://127.0.0.1:9/0"
    celery_app._pool = None
    yield
    conf.task_always_eager, conf.broker_url = previous
    celery_app._pool = None


def test_a_change_made_while_redis_is_down_is_saved_and_mailed_by_the_sweeper(
        client, person, page_url, broker_down):
    response = client.post(page_url, {"action": "save", "processing": "stop"})
    assert response.status_code == 200
    assert "Check your inbox" in response.content.decode()
    change = PendingChange.objects.get(person=person)
    row = EmailMessage.objects.get(idempotency_key=f"portal-confirm:{change.pk}")
    assert row.status == "queued" and mail.outbox == []
    # Redis is back; the sweeper finds the row a lease later and sends it.
    celery_app.conf.task_always_eager = True
    from campaigns.tasks import sweep_outbox

    with clock.frozen(clock.now() + timedelta(minutes=3)):
        assert sweep_outbox() >= 1
    row.refresh_from_db()
    assert row.status == "sent"
    link = confirm_links(mail.outbox)[-1].removeprefix("http://testserver")
    assert client.post(link).status_code == 200
    assert Person.objects.get(pk=person.pk).processing_stopped_at is not None
