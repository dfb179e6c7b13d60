"""REST API for email: sending the double opt-in request from a person record."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers, status, viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from consents.models import ConsentPurpose
from crm.models import Person

from .conversations import email_compose, inbound_record
from .double_opt_in import double_opt_in_send
from .emails import absolute_url
from .models import WebForm
from .webforms import webform_save


def embed_snippet(form: WebForm) -> str:
    """HTML to paste into another site: a plain form posting to Consenso."""
    from django.template.loader import render_to_string
    from django.urls import reverse

    return render_to_string("campaigns/web_form_snippet.html", {
        "form": form, "action": absolute_url(reverse("web-form", args=[form.slug]))})


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


class WebFormSerializer(serializers.ModelSerializer):
    consent_purposes = serializers.SlugRelatedField(
        slug_field="key", many=True, required=False, queryset=ConsentPurpose.objects.all())
    snippet = serializers.SerializerMethodField()

    class Meta:
        model = WebForm
        fields = ["id", "slug", "name", "kind", "fields", "marketing_label", "consent_purposes",
                  "thank_you_text", "autoresponder", "active", "snippet"]

    def get_snippet(self, obj) -> str:
        return embed_snippet(obj)


class WebFormViewSet(viewsets.ModelViewSet):
    """Web forms (admins): define the public forms and get an embeddable snippet."""

    serializer_class = WebFormSerializer

    def get_queryset(self):
        return WebForm.objects.prefetch_related("consent_purposes").order_by("name")

    def perform_create(self, serializer):
        self._save(serializer)

    def perform_update(self, serializer):
        self._save(serializer)

    def _save(self, serializer):
        purposes = serializer.validated_data.pop("consent_purposes", None)
        form = serializer.instance or serializer.Meta.model()
        for name, value in serializer.validated_data.items():
            setattr(form, name, value)
        webform_save(form=form)
        if purposes is not None:
            form.consent_purposes.set(purposes)
        serializer.instance = form


class InboundSerializer(serializers.Serializer):
    message_id = serializers.CharField(max_length=255, required=False, allow_blank=True)
    subject = serializers.CharField(max_length=998, allow_blank=True)
    body = serializers.CharField(allow_blank=True)


class ComposeSerializer(serializers.Serializer):
    subject = serializers.CharField(max_length=998)
    body = serializers.CharField()
    in_reply_to = serializers.CharField(max_length=255, required=False, allow_blank=True)


class InboundView(APIView):
    """POST: record a message the person sent us (a reply to it stays possible after opt-out)."""

    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(request=InboundSerializer, responses=serializers.DictField())
    def post(self, request, pk):
        if not request.user.has_perm("crm.change_person"):
            self.permission_denied(request)
        person = get_object_or_404(Person, pk=pk)
        body = InboundSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        message = inbound_record(person=person, user=request.user,
                                 message_id=body.validated_data.get("message_id", ""),
                                 subject=body.validated_data["subject"],
                                 body=body.validated_data["body"])
        return Response({"id": message.pk, "message_id": message.message_id}, status=201)


class ComposeView(APIView):
    """POST: email this person (ad-hoc, or a reply when `in_reply_to` names their message)."""

    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(request=ComposeSerializer, responses=serializers.DictField())
    def post(self, request, pk):
        if not request.user.has_perm("crm.change_person"):
            self.permission_denied(request)
        person = get_object_or_404(Person, pk=pk)
        body = ComposeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        message = email_compose(person=person, user=request.user, **body.validated_data)
        return Response({"id": message.pk, "kind": message.kind, "status": message.status},
                        status=202)
