"""Staff UI for campaigns: build one, see its dry run by the gateway's reasons (each count links to
the people behind it), send it now or at a time, pause, resume or cancel it, watch its progress
and stats, and preview the email one person would receive.

The pages parse and render; campaigns.campaign_send decides (the same services as the API's
/api/campaigns/ endpoints), campaigns.audience counts, campaigns.campaign_mail renders.
"""

import uuid

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from config import clock
from consents.models import Segment
from crm import extensions
from crm.errors import ServiceError
from crm.services import normalise_email

from . import audience, campaign_mail, gateway
from .campaign_send import (
    EDITABLE,
    campaign_cancel,
    campaign_pause,
    campaign_progress,
    campaign_resume,
    campaign_save,
    campaign_send,
    campaign_stats,
    campaign_validate,
)
from .models import Campaign
from .models import CampaignStatus as C

MAY_RUN = "campaigns.change_campaign"  # send, schedule, pause, resume, cancel
AUDIENCE_PARAM = "campaign_audience"
# Words for the reasons a campaign's message can be suppressed with beyond the gateway's.
OTHER_REASON_TEXT = {"campaign_cancelled": gettext_lazy("the campaign was cancelled")}


def reason_text(code: str) -> str:
    return str(gateway.REASON_TEXT.get(code) or OTHER_REASON_TEXT.get(code) or code)


# -- the form ----------------------------------------------------------------------------------

class RuleField(forms.JSONField):
    """The segment rule as JSON text; no rule shows as an empty box (not "null")."""

    def prepare_value(self, value):
        return "" if value is None else super().prepare_value(value)


class CampaignForm(forms.ModelForm):
    copy_segment = forms.ModelChoiceField(
        Segment.objects.all(), required=False, label=gettext_lazy("Copy the rule of a segment"),
        help_text=gettext_lazy("Replaces the segment rule with the chosen segment's rule when "
                               "you save; later changes to the segment do not follow."))

    class Meta:
        model = Campaign
        fields = ("name", "subject", "body_html", "body_text", "lists", "segment_rule")
        field_classes = {"segment_rule": RuleField}
        widgets = {"subject": forms.TextInput(attrs={"size": 80}),
                   "body_html": forms.Textarea(attrs={"rows": 14, "cols": 90}),
                   "body_text": forms.Textarea(attrs={"rows": 10, "cols": 90}),
                   "segment_rule": forms.Textarea(attrs={"rows": 4, "cols": 90})}
        help_texts = {
            "subject": gettext_lazy("Merge fields: %(fields)s, written like {{ first_name }}.")
            % {"fields": ", ".join(campaign_mail.MERGE_FIELDS)},
            "body_html": gettext_lazy("HTML. Links must be absolute (https://…). The layout "
                                      "adds the link to the person's preference page."),
            "lists": gettext_lazy("The audience is everyone on these lists, narrowed by the "
                                  "segment rule when one is given."),
            "segment_rule": gettext_lazy('A rule as JSON, e.g. {"field": "country", "op": "eq", '
                                         '"value": "IT"}. Empty: no rule.'),
        }

    def clean(self):
        cleaned = super().clean()
        segment = cleaned.get("copy_segment")
        if segment is not None and "segment_rule" in self.fields:
            cleaned["segment_rule"] = segment.rule
            self.errors.pop("segment_rule", None)  # the copied rule replaces what was typed
        return cleaned

    def _post_clean(self):
        super()._post_clean()  # the instance now carries the submitted values
        if self.errors:
            return
        # The service's own checks (merge fields, absolute links, the rule), as field errors.
        try:
            campaign_validate(self.instance)
        except ValidationError as error:
            for field, problems in error.message_dict.items():
                self.add_error(field if field in self.fields else None, problems)


# -- the person list filter behind each dry-run count ------------------------------------------

class CampaignAudienceFilter(admin.SimpleListFilter):
    """The people of one dry-run count: `?campaign_audience=<campaign id>:<reason>`. Shown in
    the sidebar only while it is applied (there is nothing sensible to list otherwise)."""

    title = gettext_lazy("campaign audience")
    parameter_name = AUDIENCE_PARAM

    def lookups(self, request, model_admin):
        parsed = audience.parse_reason_link(self.value())
        if parsed is None:
            # Offered anyway when a value was given, so the filter applies (and selects
            # nobody) rather than being dropped and listing everyone.
            return [(self.value(), _("unknown campaign or reason"))] if self.value() else []
        campaign, reason = parsed
        return [(self.value(), f"{campaign.name}: {reason_text(reason)} ({reason})")]

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        parsed = audience.parse_reason_link(self.value())
        if parsed is None or not request.user.has_perm("campaigns.view_campaign"):
            return queryset.none()
        people = audience.people_for_reason(*parsed)
        return queryset.filter(pk__in=people.values("pk"))


def audience_url(campaign: Campaign, reason: str) -> str:
    return (reverse("admin:crm_person_changelist") + "?"
            + urlencode({AUDIENCE_PARAM: f"{campaign.pk}:{reason}"}))


if CampaignAudienceFilter not in extensions.person_list_filters:
    extensions.person_list_filters.append(CampaignAudienceFilter)


# -- the buttons -------------------------------------------------------------------------------

class ScheduleForm(forms.Form):
    at = forms.DateTimeField(
        label=gettext_lazy("Send at"),
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"))

    def clean_at(self):
        at = self.cleaned_data["at"]
        # campaign_send sends at once for a time already past: a typo must not do that.
        if at <= clock.now():
            raise forms.ValidationError(_("Choose a time in the future."))
        return at


def _run(action, campaign, request):
    """Call the service for `action`; returns the message to show on success."""
    if action == "send":
        campaign_send(campaign=campaign)
        return _("Sending: the audience is being written to the outbox; each message is "
                 "checked by the gateway again right before it goes.")
    if action == "schedule":
        form = ScheduleForm(request.POST)
        if not form.is_valid():
            raise ValidationError(form.errors["at"])
        at = form.cleaned_data["at"]
        campaign_send(campaign=campaign, at=at)
        return _("Scheduled for %(at)s.") % {
            "at": timezone.localtime(at).strftime("%Y-%m-%d %H:%M %Z")}
    if action == "pause":
        campaign_pause(campaign=campaign)
        return _("Paused: messages not yet handed over are held.")
    if action == "resume":
        campaign_resume(campaign=campaign)
        return _("Resumed.")
    campaign_cancel(campaign=campaign)
    return _("Cancelled: nothing more of this campaign goes out.")


ACTIONS = ("send", "schedule", "pause", "resume", "cancel")


def _buttons(campaign: Campaign) -> list[tuple[str, str]]:
    """The actions the campaign's status allows: (action, label)."""
    labels = {"send": _("Send now"), "schedule": _("Schedule"), "pause": _("Pause"),
              "resume": _("Resume"), "cancel": _("Cancel the campaign")}
    by_status = {C.DRAFT: ("send", "schedule"), C.SCHEDULED: ("send", "schedule", "cancel"),
                 C.SENDING: ("pause", "cancel"), C.PAUSED: ("resume", "cancel")}
    return [(action, labels[action]) for action in by_status.get(campaign.status, ())]


# -- the admin ---------------------------------------------------------------------------------

@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    form = CampaignForm
    change_form_template = "admin/campaigns/campaign/change_form.html"
    list_display = ("name", "status", "scheduled_at", "started_at", "progress")
    list_filter = ("status",)
    search_fields = ("name", "subject")
    filter_horizontal = ("lists",)
    date_hierarchy = "created_at"
    fieldsets = (
        (None, {"fields": ("name",)}),
        (gettext_lazy("Email"), {"fields": ("subject", "body_html", "body_text")}),
        (gettext_lazy("Audience"), {"fields": ("lists", "segment_rule", "copy_segment")}),
    )

    @admin.display(description=gettext_lazy("progress"))
    def progress(self, obj):
        if obj.status == C.SENT:
            return "100%"
        if obj.status not in (C.SENDING, C.PAUSED) or not obj.materialised:
            return "—"
        # One indexed count per running campaign (there are few at a time).
        return f"{campaign_progress(obj):.0f}%"

    # -- editing: only while draft or scheduled, and always through campaign_save ------------
    def get_fieldsets(self, request, obj=None):
        if obj is not None and obj.status not in EDITABLE:
            return ((None, {"fields": ("name",)}),
                    (_("Email"), {"fields": ("subject", "body_html", "body_text")}),
                    (_("Audience"), {"fields": ("lists", "segment_rule")}))
        return super().get_fieldsets(request, obj)

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.status not in EDITABLE:
            return ("name", "subject", "body_html", "body_text", "lists", "segment_rule")
        return ()

    def has_delete_permission(self, request, obj=None):
        # A campaign that ever started has a mail log and stats that must stay explainable.
        return super().has_delete_permission(request, obj) and (
            obj is None or obj.started_at is None)

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # would bypass the per-campaign check above
        return actions

    def save_model(self, request, obj, form, change):
        lists = form.cleaned_data.get("lists")  # absent when read-only
        campaign_save(campaign=obj, lists=lists, actor=request.user)

    def save_related(self, request, form, formsets, change):
        pass  # campaign_save has set the lists; there are no inlines

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except ServiceError as error:  # 409: it was sent (or started) meanwhile
            self.message_user(request, error.message, messages.ERROR)
        except ValidationError as error:  # changed meanwhile so that it no longer validates
            for problem in error.messages:
                self.message_user(request, problem, messages.ERROR)
        return HttpResponseRedirect(request.get_full_path())

    def render_change_form(self, request, context, add=False, change=False, form_url="",
                           obj=None):
        if obj is not None:
            context.update(self._panels(request, obj))
            if obj.status not in EDITABLE:
                context.update(show_save=False, show_save_and_continue=False,
                               show_save_and_add_another=False)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def _panels(self, request, campaign: Campaign) -> dict:
        panels = {"campaign": campaign, "editable": campaign.status in EDITABLE,
                  "refresh": campaign.status == C.SENDING,
                  "may_run": request.user.has_perm(MAY_RUN),
                  "buttons": _buttons(campaign), "schedule_form": ScheduleForm(),
                  "now": timezone.localtime(clock.now())}
        if campaign.status in EDITABLE:
            # The dry run counts the whole audience now; once it is materialised the stats
            # keep the counts of that moment instead (and the page refreshes while sending).
            result = audience.dry_run(campaign)
            panels["dry_run"] = {
                "total": result["total"], "accepted": result["accepted"],
                "rows": [{"reason": r, "text": reason_text(r), "count": result["reasons"][r],
                          "url": audience_url(campaign, r)} for r in audience.ORDER]}
        else:
            stats = campaign_stats(campaign)
            stats["suppressed_rows"] = sorted(
                (reason, reason_text(reason), n)
                for reason, n in stats["suppressed_by_reason"].items())
            stats["excluded_rows"] = [
                (reason, reason_text(reason), stats["audience"]["excluded"][reason])
                for reason in audience.ORDER if stats["audience"]["excluded"].get(reason)]
            stats["tracked"] = stats["tracking"][campaign_mail.TRACKED]
            stats["untracked"] = stats["tracking"][campaign_mail.TRACKING_NOT_CONSENTED]
            panels["stats"] = stats
        panels.update(self._preview(request, campaign))
        return panels

    def _preview(self, request, campaign: Campaign) -> dict:
        """The email one person of the audience would receive: ?preview=<email or id>, else
        the first eligible person."""
        wanted = (request.GET.get("preview") or "").strip()
        people = audience.audience(campaign)
        if wanted:
            try:
                person = people.filter(pk=uuid.UUID(wanted)).first()
            except ValueError:
                person = people.filter(email=normalise_email(wanted)).first()
            if person is None:
                return {"preview_wanted": wanted,
                        "preview_error": _("Nobody in this campaign's audience has that "
                                           "address or id.")}
        else:
            person = audience.eligible(campaign).order_by("pk").first()
            if person is None:
                return {"preview_error": _("Nobody in the audience can receive this campaign "
                                           "now; enter an address to preview it for someone.")}
        try:
            email = campaign_mail.preview(campaign, person)
        except (KeyError, ValueError):  # content saved before a merge-field rule existed
            return {"preview_wanted": wanted,
                    "preview_error": _("This campaign's content cannot be rendered.")}
        return {"preview_wanted": wanted, "preview_person": person, "preview": email}

    # -- the buttons: POST only, each one service ---------------------------------------------
    def get_urls(self):
        return [
            path("<path:object_id>/run/<slug:action>/", self.admin_site.admin_view(self.run_view),
                 name="campaigns_campaign_run"),
            *super().get_urls(),
        ]

    def run_view(self, request, object_id, action):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not request.user.has_perm(MAY_RUN):
            raise PermissionDenied
        if action not in ACTIONS:
            raise Http404
        campaign = self.get_object(request, unquote(object_id))
        if campaign is None:
            raise Http404
        try:
            done = _run(action, campaign, request)
        except ServiceError as error:  # 409: not possible in the campaign's status
            self.message_user(request, error.message, messages.ERROR)
        except ValidationError as error:
            for problem in error.messages:
                self.message_user(request, problem, messages.ERROR)
        else:
            self.message_user(request, done, messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:campaigns_campaign_change",
                                            args=[campaign.pk]))

