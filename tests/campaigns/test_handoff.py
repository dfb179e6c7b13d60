"""The sender's own hand-off to SMTP (campaigns.handoff.HandOff): over Django's SMTP backend it
builds and sends the message itself (the From address parsed once per batch, a fresh MIME
boundary); what arrives must be what Django's send_messages() would have sent."""

import email
from email.policy import default

import pytest
from django.core.mail import EmailMultiAlternatives, get_connection

from campaigns import handoff, wire
from tests.campaigns.smtp_sink import Sink, running

pytestmark = pytest.mark.django_db


class EnvelopeSink(Sink):
    """Also keeps each message's envelope (MAIL FROM, RCPT TO)."""

    def __init__(self):
        super().__init__()
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def smtp(settings):
    server = EnvelopeSink()
    with running(server) as port:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
        settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
        settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
        settings.DEFAULT_FROM_EMAIL = "Consenso Team <no-reply@consenso.example>"
        yield server


def _message(to, subject="Grüße aus Köln", html="<p>Hallo <b>Zoë</b></p>"):
    message = EmailMultiAlternatives(subject, "Hallo Zoë,\nbis bald.\n",
                                     "Consenso Team <no-reply@consenso.example>", [to],
                                     headers={"Message-ID": "<m1@consenso.example>"})
    if html:
        message.attach_alternative(html, "text/html")
    return message


def _hand_off_both_ways(smtp, message_factory):
    """Send once through _HandOff and once through Django's own send_messages()."""
    backend = get_connection(fail_silently=False)
    backend.open()
    try:
        hand_off = handoff.HandOff(backend)
        assert hand_off.smtp  # the path under test
        hand_off(message_factory())
        backend.send_messages([message_factory()])
    finally:
        backend.close()
    ours, django = smtp.messages
    return (ours, smtp.envelopes[0]), (django, smtp.envelopes[1])


@pytest.mark.parametrize("to", ["anna.rossi@example.org", "Anna <anna@exämple.org>",
                                "o'brien+news@example.org"])
def test_hand_off_sends_what_djangos_backend_would(smtp, to):
    (ours, our_envelope), (django, django_envelope) = _hand_off_both_ways(
        smtp, lambda: _message(to))
    assert our_envelope == django_envelope
    for name in ("From", "To", "Subject", "Message-ID", "MIME-Version", "Content-Type"):
        assert (ours[name] is None) == (django[name] is None), name
        if name != "Content-Type":  # the boundary differs: random on both sides
            assert ours[name] == django[name], name
    parsed = email.message_from_bytes(ours.as_bytes(), policy=default)
    assert parsed["Subject"] == "Grüße aus Köln"
    assert parsed.get_body(("plain",)).get_content() == "Hallo Zoë,\nbis bald.\n"
    assert parsed.get_body(("html",)).get_content().strip() == "<p>Hallo <b>Zoë</b></p>"


def test_plain_text_message_without_html_goes_too(smtp):
    (ours, _env), (django, _env2) = _hand_off_both_ways(
        smtp, lambda: _message("anna@example.org", html=""))
    assert not ours.is_multipart() and ours.get_payload(decode=True) == django.get_payload(
        decode=True)


def test_other_backends_get_their_own_send_messages(settings):
    from django.core import mail

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    hand_off = handoff.HandOff(get_connection())
    assert not hand_off.smtp
    hand_off(_message("anna@example.org"))
    assert mail.outbox[-1].to == ["anna@example.org"]


@pytest.mark.parametrize("subject", [
    "Hello", "Grüße aus Köln — Neuigkeiten", "A long subject " * 12, "Tabs\tand  double  spaces",
    "x" * 100, "=?utf-8?q?looks_encoded?=",
])
def test_wire_bytes_are_what_django_would_put_on_the_wire(subject):
    message = _message("anna@example.org", subject=subject)
    message.extra_headers["List-Unsubscribe"] = "<https://crm.example.com/u/" + "a" * 90 + "/>"
    message.extra_headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    mime = message.message()
    mime.set_boundary("===============fixed==")
    assert wire.wire_bytes(mime) == mime.as_bytes(linesep="\r\n")
