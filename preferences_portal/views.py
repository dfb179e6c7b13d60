"""Pages a contact sees. No GET changes state: a link opens a page whose button POSTs."""

from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from campaigns.double_opt_in import LinkInvalid, double_opt_in_confirm, find_request
from campaigns.optin import Actor, opt_in_change
from consents.models import Verification
from crm.errors import TransitionForbidden
from crm.tokens import person_for_token


def _private(response):
    # Links carry tokens: keep them out of caches and out of Referer headers to other sites.
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "no-referrer"
    return response


@csrf_exempt  # the single-use link is the key; a no-referrer page posts with `Origin: null`
@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def double_opt_in(request, token):
    try:
        pending = find_request(token)
    except LinkInvalid:
        return _private(render(request, "preferences_portal/link_invalid.html", status=404))
    if request.method != "POST":
        return _private(render(request, "preferences_portal/double_opt_in.html",
                               {"person": pending.person}))
    try:
        double_opt_in_confirm(token=token, ip=request.META.get("REMOTE_ADDR"),
                              user_agent=request.META.get("HTTP_USER_AGENT"))
    except LinkInvalid:
        return _private(render(request, "preferences_portal/link_invalid.html", status=404))
    except TransitionForbidden as refused:
        # They opted out after this link was sent: their later choice wins.
        return _private(render(request, "preferences_portal/link_invalid.html",
                               {"message": refused.message}, status=409))
    return _private(render(request, "preferences_portal/double_opt_in_done.html"))


@csrf_exempt  # RFC 8058: the mail provider POSTs without a form token; the link is the key
@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def one_click_unsubscribe(request, token):
    """GET shows a page with a button; POST (the button, or the mail client's one-click per
    RFC 8058) opts the person out at once — the one change that needs no confirmation mail."""
    person = person_for_token(token, purpose="unsubscribe")
    if person is None:
        return _private(render(request, "preferences_portal/link_invalid.html", status=404))
    if request.method != "POST":
        return _private(render(request, "preferences_portal/unsubscribe.html"))
    opt_in_change(person=person, actor=Actor.CONTACT, verified_by=Verification.NONE,
                  evidence={"via": "one_click_unsubscribe"},
                  ip=request.META.get("REMOTE_ADDR"),
                  user_agent=request.META.get("HTTP_USER_AGENT"))
    return _private(render(request, "preferences_portal/unsubscribed.html"))


@never_cache
@require_http_methods(["GET", "HEAD"])
def preference_page(request, token):
    """The contact's own page (token purpose "portal"); built out by the preference-page work."""
    person = person_for_token(token, purpose="portal")
    if person is None:
        return _private(render(request, "preferences_portal/link_invalid.html", status=404))
    return _private(render(request, "preferences_portal/unsubscribe.html"))
