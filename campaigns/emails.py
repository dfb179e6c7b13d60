"""Every email starts here: render it from its templates, then write it to the outbox.

An email `<name>` is three templates, `emails/<name>-subject.txt`, `-body.txt` and `-body.html`
(the HTML extends `emails/base.html`). `enqueue` writes the rendered message as an outbox row in
the caller's transaction; the sender (campaigns.sender) hands it to SMTP after the commit, once
the mail gateway has said yes from fresh data.
"""

import functools
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import make_msgid
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.urls import get_script_prefix, get_urlconf, reverse
from django.utils import translation

from config import clock

from .gateway import Kind
from .models import EmailMessage

# An href/src attribute inside a tag: escaped text that merely reads "href=" (a staff member's
# message, the admins' footer) is not a link and must not fail the check.
_LINK = re.compile(r"""<[a-z][^<>]*?\b(?:href|src)\s*=\s*["']?([^"'\s>]*)""", re.IGNORECASE)
_ABSOLUTE = ("https://", "http://", "mailto:", "tel:", "cid:", "#")


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


def absolute_url(path: str) -> str:
    """`path` (e.g. from reverse()) as a link that works from a mail client."""
    return settings.SITE_URL + "/" + path.lstrip("/")


def person_link(person, *, url_name: str, purpose: str) -> str:
    """The absolute link to `person`'s own page `url_name` ("preference-page",
    "one-click-unsubscribe"), with a token for `purpose` (crm.tokens)."""
    from crm.tokens import make_token

    token = make_token(person, purpose=purpose)
    if not _URL_SAFE.fullmatch(token):
        return absolute_url(reverse(url_name, args=[token]))
    before, after = _around_token(url_name, get_script_prefix(), get_urlconf(),
                                  settings.SITE_URL)
    return before + token + after


_URL_SAFE = re.compile(r"[0-9A-Za-z_.:-]+")  # what reverse() puts in a path as it is
_MARKER = "consenso0token0marker"


@functools.lru_cache(maxsize=64)
def _around_token(url_name: str, _script_prefix: str, urlconf, _site_url: str):
    """The absolute link of `url_name` before and after its token: reverse() once per URL
    (and prefix, URLconf, site), not twice per campaign message."""
    before, after = reverse(url_name, args=[_MARKER], urlconf=urlconf).split(_MARKER)
    return absolute_url(before), after


def relative_links(html: str) -> list[str]:
    """The href/src attributes of `html` that a mail client could not follow (not absolute)."""
    return [link for link in _LINK.findall(html) if not link.lower().startswith(_ABSOLUTE)]


def render(name: str, context: dict) -> RenderedEmail:
    """Render the email `name` with `context` (plus `site_url`). Links must be absolute: a
    template that produces a relative href or src fails here rather than in an inbox."""
    context = {"site_url": settings.SITE_URL, "LANGUAGE_CODE": translation.get_language(),
               **context}
    # A subject is one header line: template newlines and indentation must not reach it.
    subject = " ".join(render_to_string(f"emails/{name}-subject.txt", context).split())
    text = render_to_string(f"emails/{name}-body.txt", context).strip() + "\n"
    html = render_to_string(f"emails/{name}-body.html", context)
    if relative_links(html):
        raise ValueError(f"Email template {name!r} renders a relative link; build links with "
                         "emails.absolute_url() or {{ site_url }}.")
    return RenderedEmail(subject, text, html)


def _message_id_domain() -> str:
    return urlsplit(settings.SITE_URL).hostname or "consenso.local"


MARKETING_KINDS = (Kind.CAMPAIGN, Kind.WORKFLOW, Kind.AUTORESPONDER)
# Written by a member of staff: these carry the admins' footer (preference-page settings).
STAFF_SENT_KINDS = (Kind.ADHOC, Kind.REPLY)


def unsubscribe_headers(person, kind: str) -> dict:
    """RFC 8058 one-click unsubscribe headers for marketing kinds (none for the others)."""
    if kind not in MARKETING_KINDS:
        return {}
    url = person_link(person, url_name="one-click-unsubscribe", purpose="unsubscribe")
    return {"List-Unsubscribe": f"<{url}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


def staff_footer(person, kind: str) -> str:
    """The admins' footer for a message of `kind` to `person`, as plain text ("" for kinds
    staff do not write, or when no footer is set). `{link}` becomes the person's own
    preference-page link. The text part shows it as it is; the HTML part escapes it and turns
    its links into anchors (emails/adhoc-body.html), so a footer cannot inject markup."""
    if kind not in STAFF_SENT_KINDS:
        return ""
    from consents.selectors import portal_settings

    footer = portal_settings().email_footer.strip()
    if "{link}" in footer:
        link = person_link(person, url_name="preference-page", purpose="portal")
        # replace(), not format(): the admins' text may hold other braces.
        footer = footer.replace("{link}", link)
    return footer


def enqueue(*, person, kind: str, template: str, context: dict, idempotency_key: str,
            in_reply_to: str = "", campaign_id: int | None = None, headers: dict | None = None,
            dispatch: bool = True) -> EmailMessage:
    """Write one message for `person` to the outbox, in the caller's transaction.

    The caller chooses an `idempotency_key` naming the intent (e.g. `campaign:<id>:<person id>`):
    enqueuing the same key again returns the first row and sends nothing more. Nothing is
    decided here: the gateway decides right before SMTP from fresh data (audience builders
    pre-check with its queryset form). The send task is queued only once the caller commits;
    bulk callers pass `dispatch=False` and call `dispatch(ids)` once, for batched tasks.
    """
    if kind not in Kind.ALL:
        raise ValueError(f"Unknown message kind {kind!r}.")
    try:
        # get(), not first(): first() sorts, and the planner may then walk a date index.
        return EmailMessage.objects.get(idempotency_key=idempotency_key)
    except EmailMessage.DoesNotExist:
        pass
    headers = {**unsubscribe_headers(person, kind), **(headers or {})}
    context = {"person": person, **context}
    if kind in STAFF_SENT_KINDS:
        # Decided here, whatever the template, and a caller's context cannot drop it.
        context["footer"] = staff_footer(person, kind)
    rendered = render(template, context)
    row = EmailMessage(
        person=person, kind=kind, template=template, campaign_id=campaign_id,
        idempotency_key=idempotency_key, message_id=make_msgid(domain=_message_id_domain()),
        in_reply_to=in_reply_to, to_address=person.email, subject=rendered.subject,
        body_text=rendered.text, body_html=rendered.html, headers=headers,
        # For a queued row, lease_until is "due at": the sweeper picks it up if it is still
        # queued a lease after that (a lost broker message).
        lease_until=clock.now(),
    )
    try:
        with transaction.atomic():
            row.save(force_insert=True)
    except IntegrityError:
        # A concurrent enqueue with the same key won the unique index: return its row.
        return EmailMessage.objects.get(idempotency_key=idempotency_key)
    if dispatch:
        from .tasks import send_messages

        transaction.on_commit(lambda: send_messages.delay([row.pk]))
    return row


def dispatch(message_ids) -> None:
    """Queue the send tasks for rows enqueued with `dispatch=False`, OUTBOX_BATCH_SIZE ids per
    task, once the caller's transaction commits."""
    from .tasks import send_messages

    ids = list(message_ids)
    size = settings.OUTBOX_BATCH_SIZE

    def _send():
        for start in range(0, len(ids), size):
            send_messages.delay(ids[start:start + size])

    transaction.on_commit(_send)
