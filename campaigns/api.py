"""REST API for email: sending the double opt-in request from a person record."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from crm.models import Person

from .double_opt_in import double_opt_in_send


class DoubleOptInView(APIView):
    """POST: email this person the double opt-in request (409 with the gateway's reason when
    it may not be sent)."""

    permission_classes = [permissions.IsAuthenticated]  # model perms checked below

    @extend_schema(request=None, responses=serializers.DictField())
    def post(self, request, pk):
        if not request.user.has_perm("crm.change_person"):
            self.permission_denied(request)
        person = get_object_or_404(Person, pk=pk)
        sent = double_opt_in_send(person=person, source="staff")
        return Response({"request": sent.pk, "message": sent.message_id,
                         "status": "queued"}, status=status.HTTP_202_ACCEPTED)
