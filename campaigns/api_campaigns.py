"""REST API for campaigns: `/api/campaigns/` (CRUD while a draft), `send`, `pause`, `resume`,
`cancel`, `dry-run` and `stats`. Views parse and call campaigns.campaign_send / audience."""

from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from config.permissions import ModelPermissions
from crm.models import MarketingList

from . import audience, campaign_send
from .gateway import REASON_TEXT
from .models import Campaign
from .models import CampaignStatus as C


class CampaignSerializer(serializers.ModelSerializer):
    lists = serializers.PrimaryKeyRelatedField(many=True, required=False,
                                               queryset=MarketingList.objects.all())
    segment_rule = serializers.JSONField(required=False, allow_null=True)

    class Meta:
        model = Campaign
        fields = ["id", "name", "subject", "body_html", "body_text", "lists", "segment_rule",
                  "status", "scheduled_at", "audience_counts", "materialised", "created_at",
                  "started_at", "finished_at"]
        read_only_fields = ["status", "scheduled_at", "audience_counts", "materialised",
                            "created_at", "started_at", "finished_at"]

    def validate(self, attrs):
        # The content rules (merge fields, absolute links, the rule language) live in the
        # service; run them here too so a bad campaign is a 400 with field errors.
        probe = Campaign(**{k: v for k, v in attrs.items() if k != "lists"})
        if self.instance is not None:
            for name in ("name", "subject", "body_html", "body_text", "segment_rule"):
                if name not in attrs:
                    setattr(probe, name, getattr(self.instance, name))
        campaign_send.campaign_validate(probe)
        return attrs

    def create(self, validated_data):
        lists = validated_data.pop("lists", [])
        return campaign_send.campaign_save(campaign=Campaign(**validated_data), lists=lists,
                                           actor=self.context["request"].user)

    def update(self, instance, validated_data):
        lists = validated_data.pop("lists", None)
        for name, value in validated_data.items():
            setattr(instance, name, value)
        return campaign_send.campaign_save(campaign=instance, lists=lists)


class SendSerializer(serializers.Serializer):
    at = serializers.DateTimeField(required=False, allow_null=True,
                                   help_text="Send at this time; omit to send now.")


class CampaignViewSet(viewsets.ModelViewSet):
    """Campaigns: build, dry-run, send (now or scheduled), pause, resume, cancel, stats."""

    queryset = Campaign.objects.prefetch_related("lists")
    serializer_class = CampaignSerializer
    permission_classes = [ModelPermissions]

    def _may_change(self, request):
        if not request.user.has_perm("campaigns.change_campaign"):
            self.permission_denied(request)

    def perform_destroy(self, instance):
        if instance.status not in campaign_send.EDITABLE:
            raise campaign_send.CampaignStateError(
                "Only a draft or scheduled campaign can be deleted; cancel it instead.")
        instance.delete()

    @extend_schema(request=SendSerializer, responses=CampaignSerializer)
    @action(detail=True, methods=["post"])
    def send(self, request, pk=None):
        self._may_change(request)
        params = SendSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        campaign = campaign_send.campaign_send(campaign=self.get_object(),
                                               at=params.validated_data.get("at"))
        code = status.HTTP_202_ACCEPTED if campaign.status == C.SENDING else status.HTTP_200_OK
        return Response(CampaignSerializer(campaign).data, status=code)

    def _transition(self, request, service):
        self._may_change(request)
        campaign = service(campaign=self.get_object())
        return Response(CampaignSerializer(campaign).data)

    @extend_schema(request=None, responses=CampaignSerializer)
    @action(detail=True, methods=["post"])
    def pause(self, request, pk=None):
        return self._transition(request, campaign_send.campaign_pause)

    @extend_schema(request=None, responses=CampaignSerializer)
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        return self._transition(request, campaign_send.campaign_resume)

    @extend_schema(request=None, responses=CampaignSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        return self._transition(request, campaign_send.campaign_cancel)

    @extend_schema(responses=serializers.DictField())
    @action(detail=True, methods=["get"], url_path="dry-run")
    def dry_run(self, request, pk=None):
        """The audience counted by the gateway's reasons, each with the people behind it."""
        campaign = self.get_object()
        result = audience.dry_run(campaign)
        people = reverse("person-list")
        result["reasons"] = {
            reason: {"count": n, "text": str(REASON_TEXT[reason]),
                     "people": request.build_absolute_uri(
                         f"{people}?campaign_audience={campaign.pk}:{reason}")}
            for reason, n in result["reasons"].items()}
        return Response(result)

    @extend_schema(responses=serializers.DictField())
    @action(detail=True, methods=["get"])
    def stats(self, request, pk=None):
        return Response(campaign_send.campaign_stats(self.get_object()))


def filter_people_by_audience(queryset, raw: str):
    """`?campaign_audience=<campaign id>:<reason>` on /api/persons/ (and the staff list): the
    people behind one count of a campaign's dry run."""
    from django.core.exceptions import ValidationError

    parsed = audience.parse_reason_link(raw)
    if parsed is None:
        raise ValidationError({"campaign_audience": [
            "Use <campaign id>:<reason> of an existing campaign, the reason one of "
            f"{', '.join(audience.ORDER)}."]})
    return queryset.filter(pk__in=audience.people_for_reason(*parsed).values("pk"))
