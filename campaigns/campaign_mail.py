"""A campaign's email for one person: merge fields, the layout with the preference-page link, the
one-click unsubscribe header, and tracking where the person allows it.

Staff write a campaign's subject and bodies with merge fields such as `{{ first_name }}`. Merge
fields are substituted, never evaluated: a value goes in as text (escaped in the HTML part), so
a name like `{{7*7}}` or `<script>` reaches the inbox as exactly those characters. The layout is
rendered once per campaign and language; each message then costs a few string joins, which
matters at a thousand messages a second.

Messages are rendered at hand-off (campaigns.sender), after the gateway's re-check: a campaign's
outbox rows are materialised without bodies (campaigns.campaign_send), so the text a person
receives uses their data as it is at that moment.
"""

import re
from dataclasses import dataclass
from html import escape
from types import SimpleNamespace

from django.conf import settings
from django.core.exceptions import ValidationError
from django.template.loader import render_to_string
from django.utils import translation
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _

from consents.selectors import tracking_allowed_ids
from crm.models import Person

from . import tracking
from .emails import RenderedEmail, person_link, relative_links, unsubscribe_headers
from .gateway import Kind
from .models import Campaign

# The template name stored on a campaign's outbox rows: "render me at hand-off".
TEMPLATE = "campaign"
TRACKED, TRACKING_NOT_CONSENTED = "tracked", "tracking_not_consented"  # DESIGN's reason code
MERGE_FIELDS = ("first_name", "last_name", "full_name", "company", "email", "preferences_url")
_MERGE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
# Anything else that looks like template syntax is refused rather than sent as it is.
_TEMPLATE_SYNTAX = re.compile(r"\{%|%\}|\{#|#\}")
_BRACES = re.compile(r"\{\{.*?\}\}", re.DOTALL)
# The value of an href or src attribute that holds a merge field.
_LINK_WITH_MERGE = re.compile(r"""\b(?:href|src)\s*=\s*["']?([^"'\s>]*\{\{[^"'>]*)""",
                              re.IGNORECASE)
_PERSON_COLUMNS = ("pk", "first_name", "last_name", "company", "email", "language",
                   "portal_key_version")


def merge_errors(text: str) -> list[str]:
    """What is wrong with the merge fields of `text` (empty when nothing is)."""
    errors = [_("Unknown merge field {{ %(name)s }}; use one of: %(known)s.")
              % {"name": name, "known": ", ".join(MERGE_FIELDS)}
              for name in _MERGE.findall(text) if name not in MERGE_FIELDS]
    if any(not _MERGE.fullmatch(braces) for braces in _BRACES.findall(text)):
        errors.append(_("Merge fields take no filters or expressions: write {{ first_name }}."))
    if _TEMPLATE_SYNTAX.search(text):
        errors.append(_("Only merge fields like {{ first_name }} are allowed, not template tags."))
    return errors


def content_errors(*, subject: str, body_html: str, body_text: str) -> dict:
    """Field errors of a campaign's content, for the API and the staff form."""
    errors = {}
    for name, value in (("subject", subject), ("body_html", body_html),
                        ("body_text", body_text)):
        problems = merge_errors(value or "")
        if name == "subject" and value and ("\n" in value or "\r" in value):
            problems.append(_("A subject is one line."))
        if name == "body_html" and value:
            if any(not _MERGE.fullmatch(link) or _MERGE.fullmatch(link).group(1)
                   != "preferences_url" for link in _LINK_WITH_MERGE.findall(value)):
                # A tracked link carries its URL in its token: no personal data in there.
                problems.append(_("Links cannot contain merge fields (except a link that is "
                                  "just {{ preferences_url }})."))
            # {{ preferences_url }} becomes an absolute link; the rule above covers the rest.
            links = [link for link in relative_links(value) if not link.startswith("{{")]
            if links:
                problems.append(_("Links must be absolute (https://…): %(links)s")
                                % {"links": ", ".join(links[:3])})
        if problems:
            errors[name] = problems
    return errors


def validate_content(campaign: Campaign) -> None:
    errors = content_errors(subject=campaign.subject, body_html=campaign.body_html,
                            body_text=campaign.body_text)
    if errors:
        raise ValidationError(errors)


@dataclass(frozen=True)
class Compiled:
    """A campaign's subject and bodies, laid out, split into literal text (even indexes) and
    merge-field names (odd indexes)."""

    subject: tuple
    text: tuple
    html: tuple


def _split(template: str) -> tuple:
    return tuple(_MERGE.split(template))


def compile_campaign(campaign: Campaign, language: str) -> Compiled:
    placeholder = "{{ preferences_url }}"
    with translation.override(language):
        context = {"site_url": settings.SITE_URL, "LANGUAGE_CODE": language,
                   "preferences_url": placeholder, "subject": campaign.subject}
        # Staff write the HTML body: it is markup, inserted as such; their merge fields are
        # still placeholders here and are filled in (escaped) per person.
        html = render_to_string("emails/campaign-body.html",
                                {**context, "body": mark_safe(campaign.body_html)})  # noqa: S308
        text = render_to_string("emails/campaign-body.txt",
                                {**context, "body": campaign.body_text}).strip() + "\n"
    return Compiled(_split(campaign.subject), _split(text), _split(html))


def _fill(parts: tuple, values: dict, quote) -> str:
    out = list(parts)
    for index in range(1, len(out), 2):
        out[index] = quote(values[out[index]])
    return "".join(out)


def _same(value: str) -> str:
    return value


def _one_line(value: str) -> str:
    return " ".join(value.split())


def merge_values(person) -> dict:
    """The merge fields of `person` (a Person or a namespace with the same attributes)."""
    first, last = person.first_name or "", person.last_name or ""
    return {
        "first_name": first, "last_name": last, "full_name": f"{first} {last}".strip(),
        "company": person.company or "", "email": person.email or "",
        "preferences_url": person_link(person, url_name="preference-page", purpose="portal"),
    }


def render(compiled: Compiled, person, *, message_pk: int | None, track: bool
           ) -> tuple[RenderedEmail, dict]:
    """One person's message: (subject, text, HTML) and its extra headers."""
    values = merge_values(person)
    html = _fill(compiled.html, values, escape)
    if track and message_pk is not None:
        html = tracking.instrument(html, message_pk)
    email = RenderedEmail(_one_line(_fill(compiled.subject, values, _same)),
                          _fill(compiled.text, values, _same), html)
    return email, unsubscribe_headers(person, Kind.CAMPAIGN)


def preview(campaign: Campaign, person: Person) -> RenderedEmail:
    """What `person` would receive (staff preview; no tracking)."""
    language = person.language or settings.LANGUAGE_CODE
    return render(compile_campaign(campaign, language), person, message_pk=None,
                  track=False)[0]


class BatchRenderer:
    """Renders the campaign rows of one outbox batch: the campaigns, the people's merge fields
    and their tracking consent are read once for the whole batch."""

    def __init__(self, rows):
        mine = [row for row in rows if row.template == TEMPLATE and row.campaign_id]
        self.campaigns = Campaign.objects.in_bulk({row.campaign_id for row in mine})
        ids = {row.person_id for row in mine}
        self.people = {p["pk"]: SimpleNamespace(**p) for p in
                       Person.objects.filter(pk__in=ids).values(*_PERSON_COLUMNS)}
        self.tracked = tracking_allowed_ids(ids) if ids else set()
        self._compiled: dict = {}

    def status(self, row) -> str | None:
        campaign = self.campaigns.get(row.campaign_id)
        return campaign.status if campaign else None

    def tracking(self, row) -> str:
        """"tracked", or the reason code saying why this message carries no tracking."""
        return TRACKED if row.person_id in self.tracked else TRACKING_NOT_CONSENTED

    def __call__(self, row) -> tuple[RenderedEmail, dict]:
        person = self.people[row.person_id]
        language = person.language or settings.LANGUAGE_CODE
        key = (row.campaign_id, language)
        if key not in self._compiled:
            self._compiled[key] = compile_campaign(self.campaigns[row.campaign_id], language)
        return render(self._compiled[key], person, message_pk=row.pk,
                      track=row.person_id in self.tracked)
