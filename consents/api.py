"""REST API for consents: purposes (staff read, admins write), a person's consents, and the
consent sections of person filters, explain and /api/settings/ (registered in apps.py)."""

from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers, status, viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from crm.models import FieldDefinition, Person

from . import rules, selectors, services
from .models import (
    Consent,
    ConsentPurpose,
    ConsentState,
    OptInAccepted,
    PurposeKind,
    Source,
    Verification,
)
from .proof import proof_of_consent


class StaffReadsAdminsWrite(permissions.BasePermission):
    """Purposes: any staff member who works people may read; writing needs the model perms."""

    def has_permission(self, request, view):
        user = request.user
        if not (user and user.is_authenticated):
            return False
        if request.method in permissions.SAFE_METHODS:
            return user.has_perm("crm.view_person")
        action = {"POST": "add", "PUT": "change", "PATCH": "change", "DELETE": "delete"}
        return user.has_perm(f"consents.{action.get(request.method, 'change')}_consentpurpose")


class PurposeSerializer(serializers.ModelSerializer):
    field = serializers.SlugRelatedField(slug_field="key", queryset=FieldDefinition.objects.all(),
                                         required=False, allow_null=True)
    title = serializers.CharField(write_only=True, required=False, max_length=200)
    text = serializers.CharField(write_only=True, required=False)
    current_version = serializers.SerializerMethodField()
    shown_to = serializers.SerializerMethodField()

    class Meta:
        model = ConsentPurpose
        fields = ["id", "key", "name", "kind", "field", "default_selected", "visibility_rule",
                  "ttl_days", "active", "position", "title", "text", "current_version",
                  "shown_to"]
        read_only_fields = ["id"]

    def get_current_version(self, obj) -> dict | None:
        version = obj.versions.order_by("-version").first()
        if version is None:
            return None
        return {"version": version.version, "title": version.title, "text": version.text,
                "text_hash": version.text_hash, "effective_at": version.effective_at}

    def get_shown_to(self, obj) -> str:
        return rules.describe(obj.visibility_rule)

    def validate(self, attrs):
        if self.instance is None and not (attrs.get("title") and attrs.get("text")):
            raise serializers.ValidationError({"text": ["A new purpose needs a title and text."]})
        if self.instance is not None and "key" in attrs and attrs["key"] != self.instance.key:
            raise serializers.ValidationError({"key": ["A purpose keeps its key."]})
        return attrs


class ConsentPurposeViewSet(viewsets.ModelViewSet):
    serializer_class = PurposeSerializer
    permission_classes = [StaffReadsAdminsWrite]
    queryset = ConsentPurpose.objects.prefetch_related("versions").order_by("position", "key")
    http_method_names = ["get", "post", "patch", "put", "head", "options"]

    def perform_create(self, serializer):
        data = dict(serializer.validated_data)
        serializer.instance = services.purpose_create(**data)

    def perform_update(self, serializer):
        data = dict(serializer.validated_data)
        title, text = data.pop("title", None), data.pop("text", None)
        purpose = serializer.instance
        for name, value in data.items():
            setattr(purpose, name, value)
        services.purpose_save(purpose=purpose)
        if title or text:
            current = purpose.versions.order_by("-version").first()
            services.purpose_publish_version(
                purpose=purpose, title=title or current.title, text=text or current.text)


class RecordSerializer(serializers.Serializer):
    purpose = serializers.SlugRelatedField(slug_field="key",
                                           queryset=ConsentPurpose.objects.all())
    action = serializers.ChoiceField(choices=["grant", "revoke"])
    note = serializers.CharField(max_length=500)


def _consent_row(consent: Consent) -> dict:
    return {"purpose": consent.purpose.key, "state": consent.state,
            "version": consent.version.version if consent.version else None,
            "updated_at": consent.updated_at, "expires_at": consent.expires_at,
            "event": consent.last_event_id}


class PersonConsentsView(APIView):
    """GET a person's consents; POST an answer the person gave (recorded with source=api)."""

    permission_classes = [permissions.IsAuthenticated]  # model perms checked per method

    def _person(self, request, pk):
        if not request.user.has_perm("crm.view_person"):
            self.permission_denied(request)
        return get_object_or_404(Person, pk=pk)

    @extend_schema(responses=serializers.DictField())
    def get(self, request, pk):
        person = self._person(request, pk)
        consents = Consent.objects.filter(person=person).select_related("purpose", "version")
        return Response({"results": [_consent_row(c) for c in consents]})

    @extend_schema(request=RecordSerializer, responses=serializers.DictField())
    def post(self, request, pk):
        person = self._person(request, pk)
        if not request.user.has_perm("consents.add_consent"):
            self.permission_denied(request)
        body = RecordSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        record = (services.consent_grant if body.validated_data["action"] == "grant"
                  else services.consent_revoke)
        consent = record(person=person, purpose=body.validated_data["purpose"],
                         source=Source.API, verified_by=Verification.API_TOKEN,
                         actor=request.user, note=body.validated_data["note"],
                         ip=request.META.get("REMOTE_ADDR"),
                         user_agent=request.META.get("HTTP_USER_AGENT"))
        return Response(_consent_row(consent), status=status.HTTP_201_CREATED)


class ProofView(APIView):
    """Proof of consent for one person and purpose (JSON)."""

    permission_classes = [permissions.IsAuthenticated]  # model perms checked per method

    @extend_schema(responses=serializers.DictField())
    def get(self, request, pk, purpose):
        if not request.user.has_perm("consents.view_consent"):
            self.permission_denied(request)
        person_id = get_object_or_404(Person, pk=pk).pk
        return Response(proof_of_consent(person_id, get_object_or_404(ConsentPurpose,
                                                                       key=purpose)))


# -- sections registered with crm (apps.py) ----------------------------------------------------

def consent_filter(queryset, value: str):
    key, sep, state = value.partition(":")
    if not sep or state not in ConsentState.values:
        raise ValidationError({"consent": [
            f"Use <purpose key>:<state> with a state among {', '.join(ConsentState.values)}."]})
    try:
        return queryset.filter(rules.to_q({"consent": key, "state": state}, fields={}))
    except rules.RuleError:
        raise ValidationError({"consent": [f"Unknown consent purpose {key!r}."]}) from None


def explain_consents(person) -> dict:
    """May we use this person's data for each purpose, and which event decides it."""
    current = {c.purpose_id: c for c in Consent.objects.filter(person=person)}
    tracking_default = selectors.consent_settings().tracking_default_when_unknown
    out = {}
    for purpose in ConsentPurpose.objects.filter(active=True).order_by("position", "key"):
        consent = current.get(purpose.pk)
        state = consent.state if consent else ConsentState.UNKNOWN
        entry = {"state": state, "event": consent.last_event_id if consent else None,
                 "decided_by": "event" if consent and consent.last_event_id else "no_answer"}
        if purpose.kind == PurposeKind.ENGAGEMENT_TRACKING:
            # The rule the tracking views apply (consents.selectors): no answer yet (unknown or
            # pending) falls back to the admins' setting.
            if state not in (ConsentState.GRANTED, ConsentState.REVOKED):
                entry["decided_by"] = "setting:tracking.default_when_unknown"
            entry["allowed"] = selectors.tracking_state_allows(state, default=tracking_default)
        else:
            entry["allowed"] = state == ConsentState.GRANTED
        out[purpose.key] = entry
    return out


def read_campaign_settings() -> dict:
    return {"opt_in_accepted": selectors.consent_settings().opt_in_accepted}


def update_campaign_settings(data: dict) -> None:
    _only(data, {"opt_in_accepted"})
    if "opt_in_accepted" in data and data["opt_in_accepted"] not in OptInAccepted.values:
        raise ValidationError({"opt_in_accepted": [
            f"One of: {', '.join(OptInAccepted.values)}."]})
    services.settings_update(**data)


# API name -> ConsentSettings field of the "tracking" section.
TRACKING_SETTINGS = {"default_when_unknown": "tracking_default_when_unknown",
                     "delete_on_revoke": "tracking_delete_on_revoke"}


def read_tracking_settings() -> dict:
    row = selectors.consent_settings()
    return {name: getattr(row, field) for name, field in TRACKING_SETTINGS.items()}


def update_tracking_settings(data: dict) -> None:
    _only(data, set(TRACKING_SETTINGS))
    errors = {name: ["Use true or false."] for name, value in data.items()
              if not isinstance(value, bool)}
    if errors:
        raise ValidationError(errors)
    if data:
        services.settings_update(**{TRACKING_SETTINGS[name]: value for name, value in data.items()})


def _only(data, allowed: set) -> None:
    if not isinstance(data, dict):
        raise ValidationError({"non_field_errors": ["Expected an object."]})
    unknown = set(data) - allowed
    if unknown:
        raise ValidationError({name: ["Unknown setting."] for name in sorted(unknown)})
