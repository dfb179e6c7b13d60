"""REST API for people: parses, calls one service, renders."""

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, renderers, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from config.permissions import ModelPermissions

from . import exports, imports, rights, selectors, services
from .models import EmailOptIn, ImportJob, Kind, Person
from .registry import CORE_EDITABLE, display_custom, encrypted_custom_rules
from .reveal import person_reveal


class MaskedField(serializers.CharField):
    """Writes take the full value; reads only ever return the stored mask."""

    def to_representation(self, value):
        return str(value or "")


class CustomField(serializers.DictField):
    def to_representation(self, value):
        # The encrypted fields' mask rules, loaded once for a whole list of people.
        root = self.root
        if not hasattr(root, "_encrypted_custom_rules"):
            root._encrypted_custom_rules = encrypted_custom_rules()
        return display_custom(value, root._encrypted_custom_rules)


class RevealSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=500)


class RevealedSerializer(serializers.Serializer):
    field = serializers.CharField()
    value = serializers.CharField()
    remask_after_seconds = serializers.IntegerField()


class PersonSerializer(serializers.ModelSerializer):
    """Shape and types only; the person service validates values and enforces the lock."""

    email = serializers.CharField(max_length=254, required=False, allow_blank=True)
    kind = serializers.ChoiceField(choices=Kind.choices, required=False)
    email_opt_in = serializers.ChoiceField(choices=EmailOptIn.choices, required=False)
    custom = CustomField(required=False)
    national_id = MaskedField(required=False, allow_blank=True, max_length=64)
    card_number = MaskedField(required=False, allow_blank=True, max_length=64)
    # Values are validated by the service (user must be staff, organisation must exist).
    owner = serializers.IntegerField(source="owner_id", required=False, allow_null=True)
    organisation = serializers.IntegerField(
        source="organisation_id", required=False, allow_null=True
    )

    class Meta:
        model = Person
        fields = [
            "id", "kind", *CORE_EDITABLE, "custom", "email_opt_in", "processing_stopped_at",
            "erasure_requested_at", "erased_at", "locked_fields", "converted_at", "created_at",
            "updated_at",
        ]
        read_only_fields = [
            "id", "processing_stopped_at", "erasure_requested_at", "erased_at", "locked_fields",
            "converted_at", "created_at", "updated_at",
        ]
        extra_kwargs = {name: {"required": False} for name in CORE_EDITABLE}

    def service_data(self) -> dict:
        data = dict(self.validated_data)
        for name in ("owner", "organisation"):
            if f"{name}_id" in data:
                data[name] = data.pop(f"{name}_id")
        if self.instance is not None:
            # kind and opt-in change only through their own services (convert, opt-in).
            for name in ("kind", "email_opt_in"):
                if name in data and data[name] == getattr(self.instance, name):
                    data.pop(name)
        return data


class StopSerializer(serializers.Serializer):
    note = serializers.CharField(max_length=1000, required=False, allow_blank=True,
                                 help_text="How the person asked (kept in the requests register).")


class ResumeSerializer(serializers.Serializer):
    reason = serializers.CharField(
        max_length=1000, help_text="Why processing may resume (recorded; the person is told).")


class CSVRenderer(renderers.BaseRenderer):
    """Lets `Accept: text/csv` reach the export (which streams its own response); anything else
    rendered here, such as a 400, is JSON."""

    media_type = "text/csv"
    format = "csv"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return renderers.JSONRenderer().render(data)


_FILTERS = [
    OpenApiParameter("kind", str, enum=Kind.values),
    OpenApiParameter("stage", str),
    OpenApiParameter("region", str),
    OpenApiParameter("owner", str, description="User id, or `none`."),
    OpenApiParameter("email", str, description="Exact match after normalisation."),
    OpenApiParameter("search", str, description="Names, email and company."),
    OpenApiParameter("email_opt_in", str, description="One state or a comma list."),
    OpenApiParameter("processing_stopped", OpenApiTypes.BOOL),
    OpenApiParameter("erasure_requested", OpenApiTypes.BOOL),
]


@extend_schema_view(list=extend_schema(parameters=_FILTERS))
class PersonViewSet(viewsets.ModelViewSet):
    """Leads and contacts. Writes to a record whose processing is stopped answer 423."""

    serializer_class = PersonSerializer
    permission_classes = [ModelPermissions]
    queryset = Person.objects.select_related(None).order_by("-created_at", "id")

    def get_queryset(self):
        qs = super().get_queryset()
        if self.action == "list":
            qs = selectors.person_filter(self.request.query_params, qs)
        return qs

    def perform_create(self, serializer):
        serializer.instance = services.person_create(
            data=serializer.service_data(), actor=self.request.user, source=services.Source.API
        )

    def perform_update(self, serializer):
        data = serializer.service_data()
        serializer.instance = services.person_update(
            person=serializer.instance, data=data, actor=self.request.user,
            source=services.Source.API,
        )

    def perform_destroy(self, instance):
        # "Delete record": every app forgets the person too (crm.rights), not just the row.
        rights.person_delete_record(person=instance, actor=self.request.user,
                                    source=services.Source.API)

    def _rights_write(self, request, permission: str):
        person = self.get_object()  # unknown or foreign id: 404 before any permission talk
        if not request.user.has_perm(permission):
            self.permission_denied(request)
        return person

    @extend_schema(request=None, responses=PersonSerializer)
    @action(detail=True, methods=["post"])
    def erase(self, request, pk=None):
        """Erase the person's personal data (GDPR Art. 17) and answer with the tombstone.
        Needs `crm.erase_person` (Admins). The address's keyed hash stays on the suppression
        list; the consent ledger stays (it holds no personal data)."""
        person = self._rights_write(request, rights.ERASE_PERMISSION)
        erased = rights.person_erase(person=person, actor=request.user,
                                     source=services.Source.API)
        return Response(self.get_serializer(erased).data, status=status.HTTP_200_OK)

    @extend_schema(request=None, responses=PersonSerializer)
    @action(detail=True, methods=["post"], url_path="erasure-request")
    def erasure_request(self, request, pk=None):
        """Record the person's request to be erased (sets `erasure_requested_at`, opens a
        request due in one month)."""
        person = self._rights_write(request, "crm.change_person")
        rights.erasure_request(person=person, actor=request.user, source=services.Source.API)
        person.refresh_from_db()
        return Response(self.get_serializer(person).data, status=status.HTTP_200_OK)

    @extend_schema(request=StopSerializer, responses=PersonSerializer)
    @action(detail=True, methods=["post"], url_path="processing-stop")
    def processing_stop(self, request, pk=None):
        """Stop processing at the person's request (GDPR Art. 18): the record locks (writes
        answer 423) and receives only rights-related mail. Idempotent."""
        person = self._rights_write(request, "crm.change_person")
        body = StopSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        stopped = rights.processing_stop(person=person, actor=request.user,
                                         source=services.Source.API,
                                         note=body.validated_data.get("note", ""))
        return Response(self.get_serializer(stopped).data, status=status.HTTP_200_OK)

    @extend_schema(request=ResumeSerializer, responses=PersonSerializer)
    @action(detail=True, methods=["post"], url_path="processing-resume")
    def processing_resume(self, request, pk=None):
        """Lift a stop of processing: needs `crm.lift_processing_stop` (Admins) and a reason;
        the person is emailed before the lift commits."""
        person = self._rights_write(request, rights.LIFT_PERMISSION)
        body = ResumeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        resumed = rights.processing_resume(person=person, actor=request.user,
                                           source=services.Source.API,
                                           reason=body.validated_data["reason"])
        return Response(self.get_serializer(resumed).data, status=status.HTTP_200_OK)

    @extend_schema(request=None, responses=PersonSerializer)
    @action(detail=True, methods=["post"])
    def convert(self, request, pk=None):
        """Convert a lead to a contact (same record, same history)."""
        if not request.user.has_perm("crm.convert_lead"):
            self.permission_denied(request)
        person = services.person_convert_to_contact(
            person=self.get_object(), actor=request.user, source=services.Source.API
        )
        return Response(self.get_serializer(person).data, status=status.HTTP_200_OK)

    @extend_schema(parameters=_FILTERS, responses={(200, "text/csv"): OpenApiTypes.STR})
    @action(detail=False, methods=["get"], renderer_classes=[renderers.JSONRenderer, CSVRenderer])
    def export(self, request):
        """The people the list filters select, as CSV (sensitive values masked; people whose
        processing is stopped left out)."""
        queryset = selectors.person_filter(request.query_params, Person.objects.all())
        return exports.csv_response(queryset, user=request.user)

    @extend_schema(request=RevealSerializer, responses=RevealedSerializer)
    @action(detail=True, methods=["post"], url_path=r"reveal/(?P<field>[-a-zA-Z0-9_]+)")
    def reveal(self, request, pk=None, field=None):
        """Reveal one sensitive value (logged; only for the field's reveal groups)."""
        person = self.get_object()
        body = RevealSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        value = person_reveal(person=person, field_key=field, user=request.user,
                              reason=body.validated_data["reason"],
                              ip=request.META.get("REMOTE_ADDR"))
        return Response({"field": field, "value": value,
                         "remask_after_seconds": settings.REVEAL_REMASK_SECONDS})


class ImportUploadSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="A UTF-8 CSV whose first line names the columns.")
    mapping = serializers.JSONField(
        binary=True, required=False,
        help_text='JSON object of column name to field key, e.g. {"E-mail": "email"}; by '
                  "default a column named after a field key fills that field.",
    )


class ImportJobSerializer(serializers.ModelSerializer):
    progress = serializers.SerializerMethodField()
    counts = serializers.SerializerMethodField()
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = ImportJob
        fields = ["id", "state", "file_name", "header", "mapping", "progress", "counts",
                  "errors", "failure", "created_by", "created_at", "started_at", "finished_at"]
        read_only_fields = fields

    def get_progress(self, job) -> dict:
        return {"processed": job.processed_rows, "total": job.total_rows}

    def get_counts(self, job) -> dict:
        return {"created": job.created_count, "skipped_duplicates": job.duplicate_count,
                "skipped_stopped": job.stopped_count, "errors": job.error_count}


class ImportJobViewSet(mixins.CreateModelMixin, mixins.RetrieveModelMixin,
                       mixins.ListModelMixin, viewsets.GenericViewSet):
    """CSV imports of people. POST a file to start one; GET it for state, progress, counts and
    row errors (line numbers count the header as line 1)."""

    serializer_class = ImportJobSerializer
    permission_classes = [ModelPermissions]
    queryset = ImportJob.objects.select_related("created_by").order_by("-created_at")
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(request={"multipart/form-data": ImportUploadSerializer},
                   responses={202: ImportJobSerializer})
    def create(self, request, *args, **kwargs):
        upload = ImportUploadSerializer(data=request.data)
        upload.is_valid(raise_exception=True)
        file = upload.validated_data["file"]
        job = imports.import_job_submit(
            upload=file, user=request.user, source=services.Source.API, file_name=file.name,
            mapping=upload.validated_data.get("mapping"),
        )
        job.refresh_from_db()
        return Response(self.get_serializer(job).data, status=status.HTTP_202_ACCEPTED,
                        headers={"Location": f"{request.path}{job.pk}/"})
