"""The admins' footer on email staff send (issue 5, item 7): appended to the text and HTML parts
of ad-hoc messages and replies, with `{link}` as the person's own preference-page link; never on
system, double opt-in or marketing mail; escaped in HTML."""

import re

import pytest

from campaigns.conversations import email_compose, inbound_record
from campaigns.double_opt_in import double_opt_in_send
from campaigns.emails import enqueue
from campaigns.gateway import Kind
from campaigns.models import EmailMessage
from consents.selectors import portal_settings
from crm.tokens import person_for_token
from tests.factories import PersonFactory, StaffUserFactory

pytestmark = pytest.mark.django_db
FOOTER = "Acme Ltd, 1 Main St.\nYour email choices: {link}"
PAGE_LINK = re.compile(r"http://mail\.test/p/([0-9a-f]+-[0-9a-f]+)/")


@pytest.fixture(autouse=True)
def _site(settings):
    settings.SITE_URL = "http://mail.test"


def set_footer(text: str) -> None:
    # The settings row itself: consents has no service writing the portal settings yet.
    row = portal_settings()
    row.email_footer = text
    row.save()


def _staff_email(person, *, reply: bool = False) -> EmailMessage:
    in_reply_to = ""
    if reply:
        in_reply_to = inbound_record(person=person, message_id="", subject="Q", body="?").message_id
    return email_compose(person=person, subject="Hello", body="Our news.",
                         user=StaffUserFactory(), in_reply_to=in_reply_to)


@pytest.mark.parametrize("reply", [False, True], ids=["adhoc", "reply"])
def test_staff_email_carries_the_footer_with_the_persons_own_page_link(reply):
    set_footer(FOOTER)
    person = PersonFactory()
    row = _staff_email(person, reply=reply)
    assert row.kind == (Kind.REPLY if reply else Kind.ADHOC)
    assert row.body_text.startswith("Our news.\n")
    assert "\n-- \nAcme Ltd, 1 Main St.\nYour email choices: http://mail.test/p/" in row.body_text
    (token,) = PAGE_LINK.findall(row.body_text)
    assert person_for_token(token, purpose="portal") == person
    link = f"http://mail.test/p/{token}/"
    assert "Acme Ltd, 1 Main St.<br>Your email choices: " in row.body_html
    assert f'<a href="{link}"' in row.body_html  # clickable in the HTML part


def test_footer_without_a_link_placeholder_is_appended_as_written():
    set_footer("Sent by Acme Ltd.")
    row = _staff_email(PersonFactory())
    assert row.body_text.rstrip().endswith("-- \nSent by Acme Ltd.")
    assert "Sent by Acme Ltd." in row.body_html and "/p/" not in row.body_html


def test_empty_footer_appends_nothing():
    set_footer("   ")
    row = _staff_email(PersonFactory())
    assert row.body_text == "Our news.\n"
    assert "-- " not in row.body_text and "/p/" not in row.body_html


def test_footer_is_escaped_in_the_html_part():
    set_footer('<script>alert("x")</script> & <a href="https://evil.example">us</a> {link}')
    row = _staff_email(PersonFactory())
    assert "<script>" not in row.body_html
    assert '<a href="https://evil.example">us</a>' not in row.body_html  # not the admins' tag
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;a href=" in row.body_html
    # The text part is plain text: the admins' words as they wrote them.
    assert '<script>alert("x")</script> & <a href' in row.body_text


@pytest.mark.parametrize("kind", [Kind.SYSTEM, Kind.CAMPAIGN, Kind.WORKFLOW, Kind.AUTORESPONDER])
def test_mail_staff_did_not_write_has_no_footer(kind):
    set_footer(FOOTER)
    person = PersonFactory(email_opt_in="single_opt_in_user")
    row = enqueue(person=person, kind=kind, template="adhoc",
                  context={"subject": "S", "body": "B", "footer": "caller's own"},
                  idempotency_key=f"k:{kind}")
    assert "Acme Ltd" not in row.body_text + row.body_html
    assert "/p/" not in row.body_text + row.body_html


def test_double_opt_in_request_has_no_footer():
    set_footer(FOOTER)
    person = PersonFactory()
    double_opt_in_send(person=person, source="staff")
    row = EmailMessage.objects.get(person=person, kind=Kind.DOUBLE_OPT_IN)
    assert "Acme Ltd" not in row.body_text + row.body_html


def test_a_callers_context_cannot_drop_the_footer_from_staff_mail():
    set_footer("Sent by Acme Ltd.")
    row = enqueue(person=PersonFactory(), kind=Kind.ADHOC, template="adhoc",
                  context={"subject": "S", "body": "B", "footer": ""}, idempotency_key="k")
    assert "Sent by Acme Ltd." in row.body_text and "Sent by Acme Ltd." in row.body_html
