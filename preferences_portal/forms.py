"""Reading the preference page's POST into what the contact wants (the service diffs it)."""

from django.utils.translation import gettext as _

from .selectors import ANSWERS

KEEP = "keep"


def _ids(values, field: str, errors: dict) -> list[int]:
    ids = []
    for raw in values:
        if not raw.isdigit():
            errors[field] = [_("Unknown list.")]
            continue
        ids.append(int(raw))
    return ids


def parse_choices(post) -> tuple[dict, dict]:
    """(wanted, errors). "Download my data" is its own form: it asks for nothing else."""
    if post.get("action") == "download":
        return {"access": True}, {}
    errors: dict = {}
    consents = {}
    for name, value in post.items():
        if not name.startswith("consent-"):
            continue
        if value in ANSWERS:
            consents[name.removeprefix("consent-")] = value
        elif value not in ("", KEEP):
            errors[name] = [_("Choose yes, no, or decide later.")]
    processing = post.get("processing", "")
    if processing not in ("", "stop", "resume"):
        errors["processing"] = [_("Unknown choice.")]
    shown = _ids(post.getlist("lists_shown"), "lists_shown", errors)
    keep = _ids(post.getlist("list"), "list", errors)
    wanted = {
        # Only the lists the page showed can be left: a list added meanwhile is not touched.
        "lists_keep": [pk for pk in shown if pk in keep],
        "lists_shown": shown,
        "opt_out": post.get("opt_out") == "on",
        "consents": consents,
        "processing": processing,
        "erasure": post.get("erasure") == "on",
    }
    return wanted, errors
