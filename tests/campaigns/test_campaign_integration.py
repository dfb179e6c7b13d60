"""A campaign to 5,000 people on PostgreSQL, Redis, a real Celery worker and a real SMTP server,
while 1,000 of them opt out, 100 stop processing and 100 are erased: no message reaches the
server after the change that forbids it committed (the sink's log is the witness)."""

import collections
import random
import threading
import time

import pytest
from django.db import connection

from campaigns import campaign_send
from campaigns.models import Campaign, EmailMessage
from campaigns.models import CampaignStatus as C
from campaigns.models import MessageStatus as S
from campaigns.optin import Actor, opt_in_change
from consents.models import Verification
from crm import rights
from crm.models import EmailOptIn, ListMembership, MarketingList, Person
from tests.campaigns.smtp_sink import Sink, running
from tests.campaigns.test_sender_integration import Worker, queue, wait_for, workers  # noqa: F401

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]
AUDIENCE, OPT_OUTS, STOPS, ERASURES = 5000, 1000, 100, 100


def _people(n: int) -> list[Person]:
    people = Person.objects.bulk_create(
        Person(kind="contact", first_name=f"P{i}", last_name="Load", email=f"p{i}@load.example",
               email_opt_in=EmailOptIn.DOUBLE_OPT_IN) for i in range(n))
    return people


def _opt_out(person):
    opt_in_change(person=person, actor=Actor.CONTACT, verified_by=Verification.EMAIL_CONFIRMATION)


def _stop(person):
    rights.processing_stop(person=person, source="portal")


def _erase(person):
    rights.person_erase(person=person, source="staff")


def _person_of(message) -> str:
    # Message-ID "<c<campaign>.<person uuid hex>@host>": it names the person even after erasure.
    return message["Message-ID"].split(".", 1)[1].split("@", 1)[0]


def test_changes_committed_while_a_campaign_sends_stop_every_later_message(queue, workers):  # noqa: F811
    people = _people(AUDIENCE)
    newsletter = MarketingList.objects.create(name="Load newsletter")
    ListMembership.objects.bulk_create(ListMembership(marketing_list=newsletter, person=p)
                                       for p in people)
    campaign = campaign_send.campaign_save(
        campaign=Campaign(name="Load", subject="Hello {{ first_name }}",
                          body_html="<p>Hi {{ first_name }}</p>", body_text="Hi {{ first_name }}"),
        lists=[newsletter])
    chosen = random.Random(7).sample(people, OPT_OUTS + STOPS + ERASURES)
    changes = ([(p, _opt_out) for p in chosen[:OPT_OUTS]]
               + [(p, _stop) for p in chosen[OPT_OUTS:OPT_OUTS + STOPS]]
               + [(p, _erase) for p in chosen[OPT_OUTS + STOPS:]])
    random.Random(8).shuffle(changes)
    committed: dict[str, float] = {}  # person id hex -> time.time() once the change committed
    errors = []

    def apply(share):
        try:
            for person, change in share:
                change(person)
                committed[person.pk.hex] = time.time()
        except Exception as error:  # noqa: BLE001 - reported by the test below
            errors.append(error)
        finally:
            connection.close()

    sink = Sink(delay=0.002)  # ~5 s of sending: the changes land while it runs
    with running(sink) as port:
        workers.append(Worker(queue, port).start())
        campaign_send.campaign_send(campaign=campaign)
        wait_for(lambda: len(sink.messages) >= 300, "the campaign to start arriving", timeout=60)
        threads = [threading.Thread(target=apply, args=(changes[i::4],)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors, errors
        wait_for(lambda: Campaign.objects.get(pk=campaign.pk).status == C.SENT,
                 "the campaign to finish", timeout=120, every=0.5)
        sent_during = sum(1 for t in sink.arrived if t >= min(committed.values()))
    arrivals = collections.defaultdict(list)
    for message, arrived in zip(sink.messages, sink.arrived, strict=True):
        arrivals[_person_of(message)].append(arrived)

    late = {pk: [t - committed[pk] for t in times if t > committed[pk]]
            for pk, times in arrivals.items() if pk in committed}
    assert {pk: d for pk, d in late.items() if d} == {}, "messages reached SMTP after the change"
    assert all(len(times) == 1 for times in arrivals.values()), "a message went twice"
    # Everyone else got theirs; the changes really raced the sending.
    untouched = {p.pk.hex for p in people} - set(committed)
    assert untouched <= set(arrivals)
    assert sent_during > 0
    reasons = collections.Counter(EmailMessage.objects.filter(
        campaign_id=campaign.pk, status=S.SUPPRESSED).values_list("reason", flat=True))
    assert reasons["opted_out_contact"] > 0 and reasons["processing_stopped"] > 0
    assert reasons["erased"] > 0
    stats = campaign_send.campaign_stats(Campaign.objects.get(pk=campaign.pk))
    assert stats["sent"] == len(arrivals) and stats["waiting"] == 0
    assert stats["sent"] + stats["suppressed"] == AUDIENCE
