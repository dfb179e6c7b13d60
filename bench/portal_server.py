"""The WSGI app bench/portal_load.py serves with gunicorn: the whole project plus one bare view
(a small template after one query), so both are measured on the same server and middleware.
It is its own URLconf; nothing here ships in the app (config.urls never names it).

    gunicorn --chdir bench --pythonpath .. portal_server:application
"""

import os

from django.core.wsgi import get_wsgi_application
from django.http import HttpResponse
from django.urls import include, path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()

from django.conf import settings  # noqa: E402 - after setup
from django.template import engines  # noqa: E402

from crm.models import Person  # noqa: E402

settings.ROOT_URLCONF = "portal_server"
_TEMPLATE = engines["django"].from_string(
    "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Hello</title></head>"
    "<body><main><h1>Hello {{ name|default:'there' }}</h1><p>Status: {{ status }}</p>"
    "<ul>{% for n in items %}<li>Item {{ n }}</li>{% endfor %}</ul></main></body></html>")


def one_query(request, pk):
    row = Person.objects.filter(pk=pk).values("first_name", "email_opt_in").first() or {}
    return HttpResponse(_TEMPLATE.render({"name": row.get("first_name"),
                                          "status": row.get("email_opt_in"),
                                          "items": range(5)}, request))


urlpatterns = [
    path("bench/one-query/<uuid:pk>/", one_query),
    path("", include("config.urls")),
]
