"""campaigns.wire.direct_wire lays out an outbox message's SMTP DATA itself: for every message it
takes, the bytes must be exactly those of Django's message() flattened by wire_bytes (same
boundary, same Date); for every other message it must decline."""

import pytest
from django.core.mail import EmailMultiAlternatives
from django.core.mail import message as django_mail
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaigns import wire

BOUNDARY = "===============0123456789abcdef0123456789abcdef=="
DATE = "Sun, 29 Nov 2026 23:27:09 -0000"

# Header text: ASCII and not, long and short, spaces, tabs, things that look encoded already.
header_text = st.one_of(
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=120),
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=90),
    st.sampled_from(["Grüße aus Köln — Neuigkeiten", "=?utf-8?q?looks_encoded?=", "x" * 100,
                     "A long subject " * 12, "Tabs\tand  double  spaces", "", "x" * 76,
                     "y" * 77, "Our spring newsletter, Reader10244", " leading", "trailing ",
                     "a  b", "=?", "?=", "word " * 15 + "w"]),
)
# Bodies: any line endings, non-ASCII, blank lines, a missing final newline.
body_text = st.lists(
    st.tuples(st.text(st.characters(blacklist_categories=("Cs",),
                                    blacklist_characters="\r\n"), max_size=200),
              st.sampled_from(["\n", "\r\n", "\r", ""])),
    min_size=1, max_size=8,
).map(lambda lines: "".join(text + end for text, end in lines))


def build(subject, body, html, headers, to="anna@example.org",
          from_email="Consenso Team <no-reply@consenso.example>"):
    message = EmailMultiAlternatives(subject, body, from_email, [to],
                                     headers={"Message-ID": "<c1.abc@consenso.example>",
                                              **headers})
    if html is not None:
        message.attach_alternative(html, "text/html")
    return message


def django_bytes(message) -> bytes:
    mime = message.message()
    if mime.is_multipart():
        mime.set_boundary(BOUNDARY)
    return wire.wire_bytes(mime)


@pytest.fixture(autouse=True)
def fixed_date(monkeypatch):
    monkeypatch.setattr(django_mail, "formatdate", lambda localtime=False: DATE)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(subject=header_text, body=body_text.filter(bool),
       html=st.one_of(st.none(), body_text), unsubscribe=header_text)
def test_direct_bytes_are_django_bytes_for_every_message_it_takes(subject, body, html,
                                                                  unsubscribe):
    message = build(subject, body, html, {"List-Unsubscribe": f"<https://x/u/{unsubscribe}>",
                                          "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"})
    direct = wire.direct_wire(message, BOUNDARY)
    assert direct is not None
    assert direct == django_bytes(message)


@pytest.mark.parametrize(("subject", "to", "from_email"), [
    ("Hello", "anna@example.org", "Consenso Team <no-reply@consenso.example>"),
    ("Grüße", "Anna Müller <anna@example.org>", "Consenso Tëam <no-reply@consenso.example>"),
    ("A long subject " * 12, "anna@bücher.example", "no-reply@consenso.example"),
])
def test_addresses_and_subjects_are_encoded_as_django_encodes_them(subject, to, from_email):
    message = build(subject, "Hello\n", "<p>Hello</p>\n",
                    {"In-Reply-To": "<x@y>", "References": "<x@y>"}, to=to,
                    from_email=from_email)
    assert wire.direct_wire(message, BOUNDARY) == django_bytes(message)


@pytest.mark.parametrize("change", [
    lambda m: m.attach("a.txt", "data", "text/plain"),
    lambda m: m.attach_alternative("<p>again</p>", "text/html"),
    lambda m: setattr(m, "cc", ["b@example.org"]),
    lambda m: setattr(m, "reply_to", ["b@example.org"]),
    lambda m: setattr(m, "to", ["a@example.org", "b@example.org"]),
    lambda m: setattr(m, "encoding", "iso-8859-1"),
    lambda m: setattr(m, "content_subtype", "html"),
    lambda m: setattr(m, "body", ""),
    lambda m: setattr(m, "body", "x" * 999),  # Django would use quoted-printable
    lambda m: m.extra_headers.pop("Message-ID"),  # Django would make one up
    lambda m: m.extra_headers.update({"Reply-To": "b@example.org"}),
    lambda m: m.extra_headers.update({"Date": "Mon, 30 Nov 2026 00:00:00 -0000"}),
], ids=["attachment", "two-alternatives", "cc", "reply-to", "two-recipients", "encoding",
        "html-body", "empty-body", "long-line", "no-message-id", "reply-to-header",
        "date-header"])
def test_other_shapes_are_declined(change):
    message = build("Hello", "Hello\n", "<p>Hello</p>\n", {})
    change(message)
    assert wire.direct_wire(message, BOUNDARY) is None


def test_a_charset_spelled_otherwise_is_declined_as_django_lays_it_out_in_base64(settings):
    settings.DEFAULT_CHARSET = "UTF-8"
    assert wire.direct_wire(build("Hello", "héllo\n", None, {}), BOUNDARY) is None


def test_a_header_with_a_newline_is_refused_as_django_refuses_it():
    from django.core.mail import BadHeaderError

    message = build("Hello\nBcc: victim@example.org", "Hello\n", None, {})
    with pytest.raises(BadHeaderError):
        wire.direct_wire(message, BOUNDARY)


@settings(max_examples=500, deadline=None)
@given(name=st.sampled_from(["List-Unsubscribe", "Message-ID", "X", "Content-Type",
                             "A-Very-Long-Header-Name-Indeed", "X-" + "N" * 80]),
       value=st.one_of(
           st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=1200),
           st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=200),
           st.text(st.characters(min_codepoint=0, max_codepoint=0x2FF), max_size=300)))
def test_the_header_policy_writes_what_compat32_writes(name, value):
    from email.policy import compat32

    assert wire._POLICY.fold_binary(name, value) == compat32.clone(
        linesep="\r\n").fold_binary(name, value)
