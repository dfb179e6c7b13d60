"""API views composed from what higher apps register in crm.extensions: explain and settings."""

from django.core.exceptions import ValidationError
from django.db import transaction
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from .extensions import explain_sections, settings_sections
from .models import Person


class ExplainView(APIView):
    """May we email / store / track / use this person's data, and why (each app adds its part)."""

    permission_classes = [permissions.IsAuthenticated]  # model perms checked per method

    @extend_schema(responses=serializers.DictField())
    def get(self, request, pk):
        if not request.user.has_perm("crm.view_person"):
            self.permission_denied(request)
        person = get_object_or_404(Person, pk=pk)
        body = {name: section(person) for name, section in explain_sections.items()}
        body["processing_stopped"] = person.processing_stopped_at is not None
        return Response(body)


class SettingsView(APIView):
    """One settings object (admins): GET reads every section, PATCH changes the ones given."""

    permission_classes = [permissions.IsAuthenticated]  # model perms checked per method

    def _check(self, request, names):
        for name in names:
            if not request.user.has_perm(settings_sections[name].permission):
                self.permission_denied(request)

    @extend_schema(responses=serializers.DictField())
    def get(self, request):
        self._check(request, settings_sections)
        return Response({name: s.read() for name, s in settings_sections.items()})

    @extend_schema(request=serializers.DictField(), responses=serializers.DictField())
    def patch(self, request):
        if not isinstance(request.data, dict):
            return Response({"non_field_errors": ["Expected an object of sections."]}, status=400)
        unknown = set(request.data) - set(settings_sections)
        if unknown:
            return Response({name: ["Unknown settings section."] for name in sorted(unknown)},
                            status=400)
        self._check(request, request.data)
        errors = {}
        with transaction.atomic():
            for name, data in request.data.items():
                try:
                    settings_sections[name].update(data)
                except ValidationError as error:
                    errors[name] = (error.message_dict if hasattr(error, "error_dict")
                                    else {"non_field_errors": error.messages})
            if errors:
                transaction.set_rollback(True)
                return Response(errors, status=400)
        return Response({name: s.read() for name, s in settings_sections.items()})
