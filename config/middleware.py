"""Request checks shared by every page and the API."""

from django.http import HttpResponseBadRequest, JsonResponse
from django.utils.translation import gettext as _


class RefuseNullCharacters:
    """A query parameter holding a null character is a 400 naming it, before any view: no text
    column of PostgreSQL accepts one, and a filter or search passing it on (the admin's list
    filters among them) would otherwise fail as a 500."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        names = sorted({name for name, values in request.GET.lists()
                        if "\x00" in name or any("\x00" in value for value in values)})
        if not names:
            return self.get_response(request)
        message = _("Remove the null character.")
        if request.path.startswith("/api/"):
            return JsonResponse({name.replace("\x00", ""): [message] for name in names},
                                status=400)
        return HttpResponseBadRequest(message)
