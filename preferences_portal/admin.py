"""Staff UI of the preference page: the admins' settings page (one row), the invitation runs
with their progress, re-permission requests on consent purposes, and "Send preference-page
link" on the person page. The last two are added to other apps' admins upward (apps.py)."""

from collections import Counter

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from campaigns import gateway
from config.readonly_admin import ReadOnlyAdminMixin
from consents import rules
from consents import services as consent_services
from consents.admin import RuleWidget
from consents.models import ConsentPurpose, PortalSettings
from consents.selectors import portal_settings
from crm import extensions
from crm.errors import ServiceError
from crm.models import Person

from . import invitations
from .models import InvitationRun

RULE_HELP = _('A JSON rule, e.g. {"field": "region", "op": "eq", "value": "EU"} or '
              '{"all": [...]}; see the rule language in the README.')


class PortalSettingsForm(forms.ModelForm):
    class Meta:
        model = PortalSettings
        fields = list(consent_services.PORTAL_SETTINGS)
        widgets = {"access_rule": RuleWidget(), "notification_rule": RuleWidget(),
                   "email_footer": forms.Textarea(attrs={"rows": 4, "cols": 80})}
        help_texts = {
            "access_rule": _("Who may use the full page. Empty: everyone. People outside it see "
                             "only their email preferences. ") + RULE_HELP,
            "notification_rule": _("Who is told when their page is opened (at most once a "
                                   "day) and asked about each new consent purpose. Empty: "
                                   "nobody. ") + RULE_HELP,
        }

    def _post_clean(self):
        super()._post_clean()
        if self._errors:
            return
        try:
            consent_services.portal_settings_clean(self.instance)
        except ValidationError as error:
            self._update_errors(error)


def _summary(rule, *, empty) -> str:
    if not rule:
        return empty
    try:
        rules.validate(rule)
    except ValidationError:
        return "—"  # the form shows the error next to the rule
    return rules.describe(rule)


@admin.register(PortalSettings)
class PortalSettingsAdmin(admin.ModelAdmin):
    """One row, edited in place: the list redirects to it; no add, no delete."""

    form = PortalSettingsForm
    change_form_template = "admin/preferences_portal/portalsettings_change_form.html"
    readonly_fields = ("who_may_access", "who_is_notified")
    fieldsets = (
        (None, {"fields": ("enabled", "email_footer")}),
        (_("Who"), {"fields": ("access_rule", "who_may_access", "notification_rule",
                               "who_is_notified")}),
        (_("Confirmation and retention"), {"fields": ("confirmation_hours",
                                                      "unconfirmed_lead_retention_months")}),
    )

    @admin.display(description=_("who may use the full page"))
    def who_may_access(self, obj):
        return _summary(obj.access_rule, empty=_("everyone"))

    @admin.display(description=_("who is notified"))
    def who_is_notified(self, obj):
        return _summary(obj.notification_rule, empty=_("nobody"))

    def changelist_view(self, request, extra_context=None):
        return HttpResponseRedirect(reverse("admin:consents_portalsettings_change",
                                            args=[portal_settings().pk]))

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def change_view(self, request, object_id, form_url="", extra_context=None):
        runs = InvitationRun.objects.select_related("purpose")[:5]
        return super().change_view(request, object_id, form_url, {
            **(extra_context or {}), "invitation_runs": runs,
            "runs_url": reverse("admin:preferences_portal_invitationrun_changelist")})

    def save_model(self, request, obj, form, change):
        was_enabled = form.initial.get("enabled", False)
        consent_services.portal_settings_update(actor=request.user, **{
            name: form.cleaned_data[name] for name in consent_services.PORTAL_SETTINGS})
        if obj.enabled and not was_enabled:
            self.message_user(request, _("The preference page is on. Invitations are being "
                                         "sent in the background: see Invitation runs."))


@admin.register(InvitationRun)
class InvitationRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("created_at", "reason", "purpose", "state", "progress", "sent",
                    "skipped_by_reason", "created_by", "finished_at")
    list_filter = ("reason", "state")
    fields = ("reason", "purpose", "state", "progress", "sent", "skipped_by_reason",
              "created_by", "created_at", "finished_at")
    readonly_fields = fields
    actions = ["resume"]

    @admin.display(description=_("progress"))
    def progress(self, obj):
        if not obj.total:
            return f"{obj.processed} / {obj.total}"
        return f"{obj.processed} / {obj.total} ({100 * obj.processed // obj.total} %)"

    @admin.display(description=_("skipped, by reason"))
    def skipped_by_reason(self, obj):
        if not obj.skipped:
            return "—"
        return ", ".join(f"{reason} {count}" for reason, count in sorted(obj.skipped.items()))

    @admin.action(description=_("Resume sending (stopped or stalled runs)"),
                  permissions=["resume"])
    def resume(self, request, queryset):
        resumed = sum(invitations.invitation_run_resume(run=run) for run in queryset)
        self.message_user(request, _("%(n)d run(s) queued again.") % {"n": resumed})

    def has_resume_permission(self, request):
        return request.user.has_perm("preferences_portal.add_invitationrun")


# -- upward: re-permission on consent purposes ---------------------------------------------------

@admin.action(description=_("Ask again: email everyone who agreed to an older text"))
def request_repermission(model_admin, request, queryset):
    if not request.user.has_perm("preferences_portal.add_invitationrun"):
        model_admin.message_user(request, _("You may not start invitation runs."),
                                 messages.ERROR)
        return
    for purpose in queryset:
        try:
            invitations.repermission_start(purpose=purpose, actor=request.user)
        except ServiceError as refused:
            model_admin.message_user(request, f"{purpose.name}: {refused.message}",
                                     messages.WARNING)
        else:
            model_admin.message_user(request, _(
                "%(name)s: re-permission requests are being sent in the background; see "
                "Invitation runs.") % {"name": purpose.name})


# -- upward: "Send preference-page link" on the person page --------------------------------------

def portal_invite_view(model_admin, request, object_id):
    """GET: what will happen (the gateway's answer, the access rule); POST: send."""
    if not request.user.has_perm("crm.change_person"):
        return HttpResponse(status=403)
    person = get_object_or_404(Person, pk=object_id)
    back = reverse(f"admin:{model_admin.model._meta.app_label}_"
                   f"{model_admin.model._meta.model_name}_change", args=[person.pk])
    if request.method == "POST":
        try:
            invitations.portal_invite_send(person=person, actor=request.user)
        except ServiceError as refused:
            model_admin.message_user(request, refused.message, messages.ERROR)
        else:
            model_admin.message_user(request, _("The preference-page link is on its way."))
        return HttpResponseRedirect(back)
    access_rule = portal_settings().access_rule
    decision = gateway.decide(person, gateway.Kind.PORTAL_INVITE)
    return render(request, "admin/preferences_portal/portal_invite.html", {
        **model_admin.admin_site.each_context(request),
        "title": _("Send preference-page link"), "person": person, "back": back,
        "decision": decision, "reason_text": gateway.REASON_TEXT.get(decision.reason),
        "inside_access_rule": not access_rule or rules.to_predicate(access_rule)(person),
        "opts": model_admin.model._meta,
    })


@admin.action(description=_("Send the preference-page link"), permissions=["change"])
def send_portal_link(model_admin, request, queryset):
    counts = Counter()
    for person in queryset:
        try:
            invitations.portal_invite_send(person=person, actor=request.user)
            counts["sent"] += 1
        except invitations.NotSent as refused:
            counts[refused.reason] += 1
    model_admin.message_user(request, _("Preference-page link: %(counts)s.") % {
        "counts": ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))}, messages.INFO)


def _portal_link(request, person):
    if not request.user.has_perm("crm.change_person"):
        return None
    return (_("Send preference-page link…"),
            reverse("admin:crm_person_portal_invite", args=[person.pk]))


def extend_admins():
    """Called from PreferencesPortalConfig.ready(), once every admin module is registered."""
    extensions.person_actions.append(send_portal_link)
    extensions.person_pages.append(
        extensions.PersonPage("portal-invite/", "portal_invite", portal_invite_view))
    extensions.person_links.append(_portal_link)
    purpose_admin = admin.site._registry.get(ConsentPurpose)
    if purpose_admin is not None:
        purpose_admin.actions = (*(purpose_admin.actions or ()), request_repermission)

