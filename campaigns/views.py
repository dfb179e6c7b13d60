"""Public web-form endpoint: `POST /forms/<slug>/` (CSRF-exempt by design: it is posted from
other sites; abuse is bounded by rate limits and a honeypot). GET shows the form itself."""

from django.core.exceptions import ValidationError
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from config.api import validation_error_detail
from crm.errors import ServiceError

from .models import WebForm
from .webforms import HONEYPOT, webform_submit


def _wants_json(request) -> bool:
    return "application/json" in request.headers.get("Accept", "") or \
        request.content_type == "application/json"


@csrf_exempt
@require_http_methods(["GET", "HEAD", "POST"])
def web_form(request, slug):
    form = get_object_or_404(WebForm, slug=slug, active=True)
    if request.method != "POST":
        return render(request, "campaigns/web_form.html", {"form": form, "honeypot": HONEYPOT})
    try:
        webform_submit(form=form, data=request.POST, ip=request.META.get("REMOTE_ADDR"),
                       user_agent=request.META.get("HTTP_USER_AGENT"))
    except ValidationError as error:
        errors = validation_error_detail(error)
        if _wants_json(request):
            return JsonResponse(errors, status=400)
        return render(request, "campaigns/web_form.html", {
            "form": form, "honeypot": HONEYPOT, "errors": errors, "data": request.POST},
            status=400)
    except ServiceError as error:
        return JsonResponse(error.as_dict(), status=error.status_code)
    if _wants_json(request):
        return JsonResponse({"ok": True, "message": form.thank_you_text})
    return render(request, "campaigns/web_form_thanks.html", {"form": form})
