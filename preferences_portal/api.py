"""REST API of the preference page's staff side: the "portal" settings section, sending one
person their link, re-permission requests and the invitation runs' progress.

Wired with one line in config/urls.py (`path("api/", include("preferences_portal.api"))`):
    POST /api/persons/{id}/portal-invite/           crm.change_person (staff)
    POST /api/consent-purposes/{key}/repermission/  preferences_portal.add_invitationrun (admins)
    GET  /api/invitation-runs/[{id}/]               preferences_portal.view_invitationrun
"""

from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404
from django.urls import path
from drf_spectacular.utils import extend_schema
from rest_framework import generics, permissions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from consents import services as consent_services
from consents.models import ConsentPurpose
from consents.selectors import portal_settings
from crm.models import Person

from . import invitations
from .models import InvitationRun

# -- the "portal" section of /api/settings/ (registered in apps.py) -----------------------------


def read_portal_settings() -> dict:
    row = portal_settings()
    return {"enabled": row.enabled, "access_rule": row.access_rule or {},
            "notification_rule": row.notification_rule or {}, "email_footer": row.email_footer,
            "confirmation_hours": row.confirmation_hours,
            "unconfirmed_lead_retention_months": row.unconfirmed_lead_retention_months}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# name -> (check of the JSON value, message when it fails)
_TYPES = {
    "enabled": (lambda v: isinstance(v, bool), "Use true or false."),
    "access_rule": (lambda v: v is None or isinstance(v, dict),
                    "A rule (JSON object); {} or null admits everyone."),
    "notification_rule": (lambda v: v is None or isinstance(v, dict),
                          "A rule (JSON object); {} or null notifies nobody."),
    "email_footer": (lambda v: isinstance(v, str), "Text."),
    "confirmation_hours": (_is_int, "A whole number of hours."),
    "unconfirmed_lead_retention_months": (lambda v: v is None or _is_int(v),
                                          "A whole number of months, or null (off)."),
}


def update_portal_settings(data: dict) -> None:
    if not isinstance(data, dict):
        raise ValidationError({"non_field_errors": ["Expected an object."]})
    errors = {name: ["Unknown setting."] for name in sorted(set(data) - set(_TYPES))}
    errors.update({name: [_TYPES[name][1]] for name, value in data.items()
                   if name in _TYPES and not _TYPES[name][0](value)})
    if errors:
        raise ValidationError(errors)
    consent_services.portal_settings_update(**data)


# -- endpoints ------------------------------------------------------------------------------------

class InvitationRunSerializer(serializers.ModelSerializer):
    purpose = serializers.SlugRelatedField(slug_field="key", read_only=True)

    class Meta:
        model = InvitationRun
        fields = ["id", "reason", "purpose", "state", "total", "processed", "sent", "skipped",
                  "created_at", "finished_at"]
        read_only_fields = fields


class PortalInviteView(APIView):
    """POST: email this person their preference-page link, even outside the access rule (their
    page then shows only the email preferences). 409 with the gateway's reason when refused."""

    permission_classes = [permissions.IsAuthenticated]  # model perms checked below

    @extend_schema(request=None, responses=serializers.DictField())
    def post(self, request, pk):
        if not request.user.has_perm("crm.change_person"):
            self.permission_denied(request)
        person = get_object_or_404(Person, pk=pk)
        message = invitations.portal_invite_send(person=person, actor=request.user)
        return Response({"message": message.message_id, "status": message.status},
                        status=status.HTTP_202_ACCEPTED)


class RepermissionView(APIView):
    """POST: ask again, by email, everyone who granted this purpose under an older text (a
    background run; 409 when the page is disabled or nobody is to be asked)."""

    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(request=None, responses=InvitationRunSerializer)
    def post(self, request, key):
        if not request.user.has_perm("preferences_portal.add_invitationrun"):
            self.permission_denied(request)
        purpose = get_object_or_404(ConsentPurpose, key=key)
        run = invitations.repermission_start(purpose=purpose, actor=request.user)
        return Response(InvitationRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class _RunsPermission(permissions.BasePermission):
    def has_permission(self, request, view):
        return request.user.has_perm("preferences_portal.view_invitationrun")


class InvitationRunListView(generics.ListAPIView):
    """GET: the invitation runs with their progress, newest first."""

    permission_classes = [permissions.IsAuthenticated, _RunsPermission]
    serializer_class = InvitationRunSerializer
    queryset = InvitationRun.objects.select_related("purpose")


class InvitationRunDetailView(generics.RetrieveAPIView):
    """GET: one invitation run's progress."""

    permission_classes = [permissions.IsAuthenticated, _RunsPermission]
    serializer_class = InvitationRunSerializer
    queryset = InvitationRun.objects.select_related("purpose")


urlpatterns = [
    path("persons/<uuid:pk>/portal-invite/", PortalInviteView.as_view(),
         name="person-portal-invite"),
    path("consent-purposes/<slug:key>/repermission/", RepermissionView.as_view(),
         name="consent-purpose-repermission"),
    path("invitation-runs/", InvitationRunListView.as_view(), name="invitation-runs"),
    path("invitation-runs/<int:pk>/", InvitationRunDetailView.as_view(), name="invitation-run"),
]
