"""REST API for marketing lists and their members: parses, calls one service, renders.

The lists themselves answer to the model permissions (as web forms do): the API and the staff UI
grant the same things. Members answer to the ListMembership permissions. Selecting people by a
segment or a rule goes through `crm.extensions.person_filters` (consents registers those), so
this module imports nothing above crm.
"""

from django.core.exceptions import ValidationError
from django.db.models import Count
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response

from config.permissions import ModelPermissions

from . import lists, selectors, services
from .api import _FILTERS
from .extensions import person_filters
from .models import ListMembership, MarketingList, Person


class MarketingListSerializer(serializers.ModelSerializer):
    member_count = serializers.SerializerMethodField()

    class Meta:
        model = MarketingList
        fields = ["id", "name", "description", "member_count", "created_at"]
        read_only_fields = ["id", "created_at"]

    def get_member_count(self, obj) -> int:
        count = getattr(obj, "member_count", None)  # annotated on lists read from the database
        return obj.listmembership_set.count() if count is None else count


class MemberSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="person_id")
    name = serializers.CharField(source="person.full_name")
    email = serializers.CharField(source="person.email")
    email_opt_in = serializers.CharField(source="person.email_opt_in")

    class Meta:
        model = ListMembership
        fields = ["id", "name", "email", "email_opt_in", "added_at", "source"]


class MembersAddSerializer(serializers.Serializer):
    """Exactly one way of naming the people to add."""

    persons = serializers.ListField(child=serializers.UUIDField(), required=False,
                                    allow_empty=False, max_length=10_000)
    segment = serializers.IntegerField(required=False, help_text="A segment id.")
    rule = serializers.JSONField(required=False, help_text="A rule of the rule language.")
    filter = serializers.DictField(
        child=serializers.CharField(), required=False, allow_empty=False,
        help_text='The filters /api/persons/ takes, e.g. {"stage": "won", '
                  '"consent": "newsletter:granted"}.')
    file = serializers.FileField(required=False,
                                 help_text="A UTF-8 CSV with an `email` column.")
    WAYS = ("persons", "segment", "rule", "filter", "file")

    def validate_filter(self, value):
        known = {parameter.name for parameter in _FILTERS} | set(person_filters)
        unknown = sorted(set(value) - known)
        if unknown:
            raise serializers.ValidationError(
                f"Unknown filter: {', '.join(unknown)}. Use: {', '.join(sorted(known))}.")
        return value

    def validate(self, data):
        given = [way for way in self.WAYS if way in data]
        if len(given) != 1:
            raise serializers.ValidationError(
                f"Give exactly one of: {', '.join(self.WAYS)}.")
        return data


class MembersRemoveSerializer(serializers.Serializer):
    persons = serializers.ListField(child=serializers.UUIDField(), allow_empty=False,
                                    max_length=10_000)


class RemovedSerializer(serializers.Serializer):
    removed = serializers.IntegerField()


class AddedSerializer(serializers.Serializer):
    added = serializers.IntegerField()
    already = serializers.IntegerField()
    skipped_stopped = serializers.IntegerField()
    skipped_erased = serializers.IntegerField()
    unknown = serializers.IntegerField()
    errors = serializers.ListField(child=serializers.DictField(), required=False,
                                   help_text="CSV only: [{line, reason}], the header is line 1.")


class MarketingListViewSet(viewsets.ModelViewSet):
    """Marketing lists with their member counts; `members/` reads, adds and removes people."""

    serializer_class = MarketingListSerializer
    permission_classes = [ModelPermissions]
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    def get_queryset(self):
        return MarketingList.objects.annotate(member_count=Count("listmembership")).order_by(
            "name", "pk")

    def perform_create(self, serializer):
        serializer.instance = services.marketing_list_save(
            marketing_list=MarketingList(**serializer.validated_data))

    def perform_update(self, serializer):
        marketing_list = serializer.instance
        for name, value in serializer.validated_data.items():
            setattr(marketing_list, name, value)
        serializer.instance = services.marketing_list_save(marketing_list=marketing_list)

    def perform_destroy(self, instance):
        lists.marketing_list_delete(marketing_list=instance)

    def _member_access(self, request, *perms):
        marketing_list = self.get_object()  # unknown list: 404 before any permission talk
        if not all(request.user.has_perm(perm) for perm in perms):
            self.permission_denied(request)
        return marketing_list

    @extend_schema(methods=["GET"], request=None, responses=MemberSerializer(many=True))
    @extend_schema(methods=["POST"], request=MembersAddSerializer, responses=AddedSerializer)
    @extend_schema(methods=["DELETE"], request=MembersRemoveSerializer,
                   responses=RemovedSerializer)
    @action(detail=True, methods=["get", "post", "delete"],
            permission_classes=[permissions.IsAuthenticated])  # model perms per method below
    def members(self, request, pk=None):
        """GET: the members, newest first. POST: add people named by `persons` (ids),
        `segment`, `rule`, `filter` or a CSV `file`; answers the counts (people whose processing
        is stopped, or who were erased, are skipped). DELETE: remove `persons`."""
        if request.method == "GET":
            return self._members_list(request)
        if request.method == "DELETE":
            return self._members_remove(request)
        return self._members_add(request)

    def _members_list(self, request):
        marketing_list = self._member_access(request, "crm.view_listmembership",
                                             "crm.view_person")
        members = (ListMembership.objects.filter(marketing_list=marketing_list)
                   .select_related("person").order_by("-added_at", "person_id"))
        page = self.paginate_queryset(members)
        return self.get_paginated_response(MemberSerializer(page, many=True).data)

    def _members_add(self, request):
        marketing_list = self._member_access(request, "crm.add_listmembership")
        body = MembersAddSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data, common = body.validated_data, {
            "marketing_list": marketing_list, "actor": request.user,
            "source": services.Source.API}
        if "file" in data:
            result = lists.list_add_csv(file=data["file"], **common)
            return Response({**result.counts(), "errors": result.errors})
        if "persons" in data:
            result = lists.list_add_people(person_ids=data["persons"], **common)
        else:
            result = lists.list_add_people(people=self._selection(data), **common)
        return Response(result.counts(), status=status.HTTP_200_OK)

    @staticmethod
    def _selection(data):
        if "filter" in data:
            return selectors.person_filter(data["filter"], Person.objects.all())
        name = "segment" if "segment" in data else "rule"
        if name not in person_filters:
            raise ValidationError({name: [f"Selecting by {name} is not available."]})
        return person_filters[name](Person.objects.all(), data[name])

    def _members_remove(self, request):
        marketing_list = self._member_access(request, "crm.delete_listmembership")
        body = MembersRemoveSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        removed = services.marketing_list_remove(
            marketing_list=marketing_list, person_ids=body.validated_data["persons"],
            actor=request.user, source=services.Source.API)
        return Response({"removed": removed})
