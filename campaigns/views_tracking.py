"""Public tracking endpoints: the open pixel (`/t/o/<token>/`) and the click redirect
(`/t/c/<token>/`). No login, GET and HEAD only.

Mail scanners fetch links before the reader does, often with HEAD: HEAD answers the same but
records nothing. An event is recorded only if the person may be tracked at that moment
(campaigns.tracking.event_record). Nothing here logs the token, the URL or the person.
"""

import base64

from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.views.decorators.http import require_safe

from . import tracking
from .models import TrackingEvent

# A transparent 1×1 GIF.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


def _no_store(response):
    # Every fetch must reach us (an open is a fetch), and no shared cache may keep the redirect.
    response["Cache-Control"] = "no-store, max-age=0"
    return response


@require_safe
def open_pixel(request, token):
    message_pk = tracking.open_token_message(token)
    if message_pk is not None and request.method == "GET":
        tracking.event_record(message_pk=message_pk, kind=TrackingEvent.Kind.OPEN)
    # The image is answered whatever the token: a broken image helps no one.
    return _no_store(HttpResponse(PIXEL, content_type="image/gif"))


@require_safe
def click(request, token):
    target = tracking.click_token_target(token)
    if target is None:
        raise Http404  # forged or altered: no redirect anywhere (no open redirect)
    message_pk, url = target
    if request.method == "GET":
        tracking.event_record(message_pk=message_pk, kind=TrackingEvent.Kind.CLICK, url=url)
    response = _no_store(HttpResponseRedirect(url))
    response["Referrer-Policy"] = "no-referrer"  # the token stays ours
    return response
