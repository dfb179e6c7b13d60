"""Pages a contact sees. No GET changes state: a link opens a page whose button POSTs."""

from functools import wraps

from django.conf import settings
from django.http import HttpResponse
from django.shortcuts import render
from django.utils import translation
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from campaigns.double_opt_in import LinkInvalid, double_opt_in_confirm, find_request
from campaigns.optin import Actor, opt_in_change
from consents.models import Verification
from crm.errors import ServiceError, TransitionForbidden
from crm.tokens import person_for_token

from . import notifications, selectors, services
from .csrf import portal_csrf_protect
from .forms import parse_choices


def _private(response):
    # Links carry tokens: keep them out of caches and out of Referer headers to other sites.
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "no-referrer"
    return response


def _always_private(view):
    """Every response of a view whose URL carries a secret is private, refusals (405) too."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        return _private(view(request, *args, **kwargs))

    return wrapper


def _use_language(request, *preferred: str) -> str:
    """An explicit switch (?lang=), else the first preference given (the person's language),
    else what LocaleMiddleware found (cookie, then the browser's Accept-Language)."""
    available = {code for code, _name in settings.LANGUAGES}
    for code in (request.GET.get("lang", ""), *preferred):
        if code in available:
            translation.activate(code)
            request.LANGUAGE_CODE = code
            break
    return translation.get_language()


def _invalid(request, status=404, message=""):
    return _private(render(request, "preferences_portal/link_invalid.html",
                           {"message": message}, status=status))


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


def _page(request, person, *, status=200, **extra):
    page = selectors.page_for(person)
    if request.method == "GET":
        # "Your page was opened" for people the notification rule admits (never raises).
        notifications.page_accessed(person, portal=page.settings)
    return _private(render(request, "preferences_portal/page.html",
                           {"page": page, "summary": (selectors.change_summary(
                               page.pending.changes) if page.pending else []), **extra},
                           status=status))


@portal_csrf_protect
@_always_private
@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def preference_page(request, token):
    """The contact's own page (token purpose "portal"). A POST stores the choices as a pending
    change and emails the confirmation link to the address on file; nothing changes yet."""
    # The person and their own rows for the page, in one query.
    person = person_for_token(token, purpose="portal",
                              people=selectors.page_people())
    if person is None:
        return _invalid(request)
    language = _use_language(request, person.language)
    if person.erased_at is not None:
        return _private(render(request, "preferences_portal/erased.html"))
    if request.method != "POST":
        return _page(request, person)
    wanted, errors = parse_choices(request.POST)
    if errors:
        return _page(request, person, status=400, errors=errors)
    try:
        change = services.pending_change_submit(person=person, wanted=wanted, language=language)
    except services.NothingToChange as nothing:
        return _page(request, person, notice=nothing.message)
    except services.TooManySubmissions as refused:
        return _page(request, person, status=refused.status_code, notice=refused.message)
    return _private(render(request, "preferences_portal/submitted.html", {
        "change": change, "summary": selectors.change_summary(change.changes),
        "address": selectors.masked_address(person.email), "token": token}))


def _confirm_context(change, token):
    return {"change": change, "summary": selectors.change_summary(change.changes),
            "suggestions": selectors.suggestions(change.changes),
            "token": token, "downloads": selectors.download_open(change)}


@portal_csrf_protect
@_always_private
@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def confirm_change(request, token):
    """The link in the confirmation email: GET shows what will change; the button POSTs and
    applies it, once."""
    try:
        change = services.pending_change_find(token)
    except ServiceError:
        return _invalid(request)
    _use_language(request, change.language, change.person.language)
    context = _confirm_context(change, token)
    state = services.link_state(change)
    if request.method != "POST":
        if state != change.State.PENDING:
            return _private(render(request, "preferences_portal/confirm_closed.html", {
                **context, "state": state, "message": services.not_pending_message(state)}))
        return _private(render(request, "preferences_portal/confirm.html", context))
    try:
        applied = services.pending_change_confirm(
            token=token, accepted=request.POST.getlist("accept"),
            ip=request.META.get("REMOTE_ADDR"), user_agent=request.META.get("HTTP_USER_AGENT"))
    except services.ChangeNotPending as closed:
        change.refresh_from_db()
        return _private(render(request, "preferences_portal/confirm_closed.html", {
            **_confirm_context(change, token), "state": closed.state,
            "message": closed.message}, status=409))
    except ServiceError as refused:
        return _invalid(request, status=refused.status_code, message=refused.message)
    return _private(render(request, "preferences_portal/confirmed.html", {
        **_confirm_context(applied.change, token), "outdated": applied.outdated}))


@_always_private
@never_cache
@require_http_methods(["GET", "HEAD"])
def download_data(request, token, fmt):
    """"Download my data" after a confirmed request: the confirmation secret is the key; reading
    changes nothing (the request was registered when it was confirmed)."""
    try:
        name, content_type, body = services.pending_change_export(token=token, fmt=fmt)
    except ServiceError:
        return _invalid(request)
    response = HttpResponse(body, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return _private(response)
