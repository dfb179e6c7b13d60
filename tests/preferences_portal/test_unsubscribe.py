import secrets

import pytest

from campaigns.emails import enqueue
from campaigns.gateway import Kind
from crm.models import Person
from crm.tokens import make_token, person_for_token
from tests.factories import PersonFactory

pytestmark = pytest.mark.django_db


def test_marketing_email_carries_rfc8058_headers_and_one_click_opts_out_at_once(client):
    person = PersonFactory(email_opt_in="single_opt_in_user")
    row = enqueue(person=person, kind=Kind.AUTORESPONDER, template="webform_ack",
                  context={"form_name": "F", "thank_you": "Thanks"}, idempotency_key="k1")
    assert row.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = row.headers["List-Unsubscribe"].strip("<>")
    path = "/" + url.split("/", 3)[3]
    # A scanner's GET or HEAD changes nothing.
    assert client.get(path).status_code == 200 and client.head(path).status_code == 200
    assert Person.objects.get(pk=person.pk).email_opt_in == "single_opt_in_user"
    # The mail provider's one-click POST (no CSRF token, RFC 8058 body).
    response = client.post(path, "List-Unsubscribe=One-Click",
                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200
    assert Person.objects.get(pk=person.pk).email_opt_in == "opt_out_contact"


def test_non_marketing_mail_has_no_unsubscribe_header():
    person = PersonFactory()
    row = enqueue(person=person, kind=Kind.ADHOC, template="adhoc",
                  context={"subject": "Hi", "body": "Hello"}, idempotency_key="k2")
    assert "List-Unsubscribe" not in row.headers


def test_tokens_are_unguessable_and_die_with_the_key_version():
    person = PersonFactory()
    token = make_token(person, purpose="unsubscribe")
    assert person_for_token(token, purpose="unsubscribe") == person
    assert person_for_token(token, purpose="portal") is None  # bound to its purpose
    prefix = person.pk.hex + "-"
    assert all(person_for_token(prefix + secrets.token_hex(16), purpose="unsubscribe") is None
               for _ in range(2_000))
    Person.objects.filter(pk=person.pk).update(portal_key_version=2)
    assert person_for_token(token, purpose="unsubscribe") is None


@pytest.mark.parametrize("token", ["x", "nope-nope", "0" * 32 + "-" + "0" * 32])
def test_malformed_tokens_get_404(client, token):
    assert client.post(f"/u/{token}/").status_code == 404
