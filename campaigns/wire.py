"""An outbox message as SMTP DATA: the bytes Django's SMTP backend would send, made faster.

`wire_bytes(mime)` flattens a message Django built, with a header policy that writes short
plain-ASCII headers as they are. `direct_wire(message, boundary)` skips building the
`email.message` tree for the shape nearly every outbox message has — a text body and at most an
HTML alternative, one recipient, a Message-ID set by the caller — and lays the same bytes out
itself, header by header through the same functions Django's `message()` and the generator call
(`forbid_multi_line_headers`, the policy's `fold_binary`). Building that tree was most of a
sender's CPU per message (bench/send_throughput.py). For any other message, or a body that
Django would encode as quoted-printable, it returns None and the caller takes `wire_bytes`.
tests/campaigns/test_wire.py checks the two agree byte for byte on generated messages.
"""

import io
import re
from email.generator import BytesGenerator
from email.policy import Compat32

from django.conf import settings
from django.core.mail import message as django_mail


class _PlainHeaders(Compat32):
    """compat32 (the policy Django's messages use), except that a header which is plain ASCII
    and fits on one line is written as it is, and one that is a single long word (a
    List-Unsubscribe link) on a continuation line, without building an email.header.Header for
    it: compat32 writes the same bytes, and those Header objects were a fifth of a worker's CPU
    per message."""

    def fold_binary(self, name, value):
        limit = self.max_line_length
        if isinstance(value, str) and value.isascii() and value.isprintable() and limit:
            if len(name) + 2 + len(value) <= limit:
                return f"{name}: {value}{self.linesep}".encode("ascii")
            if value and " " not in value:  # one long word (a link): a line of its own
                return f"{name}: {self.linesep} {value}{self.linesep}".encode("ascii")
        return super().fold_binary(name, value)


_POLICY = _PlainHeaders(linesep="\r\n")
_CRLF = b"\r\n"
_NEWLINES = re.compile(r"\r\n|\r|\n")  # what the generator turns into CRLF (email.generator)
# Headers the direct path sets itself, or that change the message's structure.
_OWN_HEADERS = frozenset({"from", "to", "cc", "reply-to", "date", "subject", "content-type",
                          "mime-version", "content-transfer-encoding"})


def wire_bytes(mime) -> bytes:
    """`mime` as SMTP DATA: what Django's `as_bytes(linesep="\\r\\n")` gives, made faster."""
    out = io.BytesIO()
    BytesGenerator(out, mangle_from_=False, policy=_POLICY).flatten(mime, linesep="\r\n")
    return out.getvalue()


def direct_wire(message, boundary: str, cache: dict | None = None) -> bytes | None:
    """`wire_bytes(message.message())` (its boundary set to `boundary`) without building the
    MIME tree, or None when `message` is not of the shape this handles. `cache` keeps the
    headers already laid out, for a caller that sends many messages (a batch shares most of its
    headers); it holds recipients' addresses, so it should live no longer than the batch."""
    cache = {} if cache is None else cache
    alternatives = message.alternatives
    # Exactly "utf-8": Django's SafeMIMEText lays out 8bit text only for that spelling (any
    # other, "UTF-8" included, gets base64).
    if (message.encoding or settings.DEFAULT_CHARSET != "utf-8" or message.attachments
            or message.cc or message.bcc or message.reply_to or len(message.to) != 1
            or message.content_subtype != "plain" or not message.body
            or (alternatives and (len(alternatives) != 1 or alternatives[0][1] != "text/html"
                                  or message.alternative_subtype != "alternative"))):
        return None
    extra = message.extra_headers
    names = {name.lower() for name in extra}
    if "message-id" not in names or not names.isdisjoint(_OWN_HEADERS):
        return None
    text = _text_part("plain", message.body)
    html = _text_part("html", alternatives[0][0]) if alternatives else None
    if text is None or (alternatives and html is None):
        return None
    if html is None:
        headers, parts = text[0], []
    else:
        headers = [("Content-Type", f'multipart/alternative; boundary="{boundary}"'),
                   ("MIME-Version", "1.0")]
        parts = [text, html]
    headers = headers + [
        ("Subject", message.subject), ("From", message.from_email), ("To", str(message.to[0])),
        ("Date", django_mail.formatdate(localtime=settings.EMAIL_USE_LOCALTIME)),
        *extra.items(),
    ]
    out = [_header_bytes(headers, cache), _CRLF]
    if not parts:
        out.append(text[1])
    else:
        dash = f"--{boundary}".encode("ascii")
        for at, (part_headers, body) in enumerate(parts):
            out += [_CRLF if at else b"", dash, _CRLF, _header_bytes(part_headers, cache), _CRLF,
                    body]
        out += [_CRLF, dash, b"--", _CRLF]
    return b"".join(out)


def _header_bytes(headers, cache: dict) -> bytes:
    out = []
    for name, value in headers:
        key = (name, str(value))
        data = cache.get(key)
        if data is None:
            data = cache[key] = _header(*key)
        out.append(data)
    return b"".join(out)


def _header(name: str, value: str) -> bytes:
    """One header as Django stores it (`forbid_multi_line_headers`: encoded, checked for
    newlines) and the generator writes it (the policy's `fold_binary`)."""
    if len(value) <= _HEADER_LINE and _PLAIN_WORDS.match(value):
        # What forbid_multi_line_headers keeps as it is (a personalised subject: its Header
        # would fold or encode nothing).
        return _POLICY.fold_binary(name, value)
    return _POLICY.fold_binary(*django_mail.forbid_multi_line_headers(name, value, "utf-8"))


_PLAIN_WORDS = re.compile(r"[!-~]+(?: [!-~]+)*\Z")  # printable ASCII words, single spaces
_HEADER_LINE = 76  # email.header.MAXLINELEN: what Header().encode() fits on one line


def _text_part(subtype: str, text: str):
    """(headers, body bytes) of a utf-8 text part as Django's SafeMIMEText lays it out, or None
    when Django would encode it as quoted-printable (a line over 998 bytes) or it cannot be
    encoded."""
    if not isinstance(text, str):
        return None
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        return None
    limit = django_mail.RFC5322_EMAIL_LINE_LENGTH_LIMIT
    # A line of at most limit/4 characters cannot be over the limit in UTF-8 bytes.
    if len(raw) > limit and any(len(line.encode()) > limit for line in text.splitlines()
                                if len(line) > limit // 4):
        return None
    headers = [("Content-Type", f'text/{subtype}; charset="utf-8"'), ("MIME-Version", "1.0"),
               ("Content-Transfer-Encoding", "7bit" if raw.isascii() else "8bit")]
    return headers, _NEWLINES.sub("\r\n", text).encode("utf-8")
