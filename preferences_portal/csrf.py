"""CSRF protection for portal forms, which are served with `Referrer-Policy: no-referrer`.

Under that policy a browser sends its form POST with `Origin: null` and no Referer (Fetch
standard, "serializing a request origin"), so Django's origin and referer checks can never
pass, even for our own page. This keeps everything else of Django's check: the secret in the form
must match the CSRF cookie, and the cookie is SameSite=Lax, so another site's POST arrives
without it and is refused. Any Origin other than `null` is still checked as usual.
"""

import logging

from django.middleware.csrf import CsrfViewMiddleware
from django.shortcuts import render
from django.utils.decorators import decorator_from_middleware
from django.views.decorators.csrf import csrf_exempt

logger = logging.getLogger(__name__)


class _PortalCsrf(CsrfViewMiddleware):
    def _origin_verified(self, request):
        return request.META.get("HTTP_ORIGIN") == "null" or super()._origin_verified(request)

    def _reject(self, request, reason):
        # Logged without the path: portal paths carry the person's link secret.
        logger.warning("Forbidden (CSRF): %s", reason)
        response = render(request, "preferences_portal/csrf_failed.html", status=403)
        response["Cache-Control"] = "no-store"
        response["Referrer-Policy"] = "no-referrer"
        return response


_protect = decorator_from_middleware(_PortalCsrf)


def portal_csrf_protect(view):
    """Check CSRF as described above; the site-wide middleware (which would refuse the null
    Origin) is told to leave this view alone."""
    return csrf_exempt(_protect(view))
