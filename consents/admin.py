"""Settings for consents (admins) and the Consents block, filters and report for staff.

Composed upward: this module adds its inline, filters and views to crm's person admins; crm's
admin knows nothing of consents.
"""

import csv

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from config.readonly_admin import ReadOnlyAdminMixin
from crm import extensions
from crm.errors import ServiceError
from crm.models import Person

from . import rules, selectors, services
from .models import (
    Consent,
    ConsentEvent,
    ConsentPurpose,
    ConsentPurposeVersion,
    ConsentSettings,
    ConsentState,
    PolicyVersion,
    Segment,
    Source,
    Verification,
)
from .proof import proof_of_consent

PLANET49 = _("A default only pre-fills the preference page as a suggestion. A pre-ticked box is "
             "not valid consent for EU contacts (CJEU, Planet49, C-673/17): the contact must "
             "still choose.")


class RuleWidget(forms.Textarea):
    def __init__(self):
        super().__init__(attrs={"rows": 4, "cols": 80, "style": "font-family:monospace"})

    def format_value(self, value):
        # A JSON form field shows an empty rule as `null`; an empty box means "everyone".
        return "" if value == "null" else super().format_value(value)


class PurposeForm(forms.ModelForm):
    title = forms.CharField(label=_("Title shown to contacts"), max_length=200,
                            widget=forms.TextInput(attrs={"class": "vTextField"}))
    text = forms.CharField(label=_("Text shown to contacts"), widget=forms.Textarea,
                           help_text=_("Changing the title or text publishes a new version."))

    class Meta:
        model = ConsentPurpose
        fields = ["key", "name", "kind", "field", "default_selected", "visibility_rule",
                  "ttl_days", "active", "position"]
        widgets = {"visibility_rule": RuleWidget()}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            current = self.instance.versions.order_by("-version").first()
            if current:
                self.fields["title"].initial = current.title
                self.fields["text"].initial = current.text
        self.fields["default_selected"].help_text = PLANET49

    def _post_clean(self):
        super()._post_clean()
        try:
            services.purpose_clean(self.instance)
        except ValidationError as error:
            self._update_errors(error)


class VersionInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = ConsentPurposeVersion
    fields = ("version", "title", "effective_at", "text_hash")
    readonly_fields = fields
    extra = 0


@admin.register(ConsentPurpose)
class ConsentPurposeAdmin(admin.ModelAdmin):
    form = PurposeForm
    list_display = ("name", "key", "kind", "field", "default_selected", "shown_to", "active")
    list_filter = ("kind", "active")
    inlines = [VersionInline]
    readonly_fields = ("shown_to",)

    @admin.display(description=_("shown to"))
    def shown_to(self, obj):
        return rules.describe(obj.visibility_rule)

    def get_readonly_fields(self, request, obj=None):
        return ("shown_to", "key") if obj else ()

    def save_model(self, request, obj, form, change):
        title, text = form.cleaned_data["title"], form.cleaned_data["text"]
        if change:
            services.purpose_save(purpose=obj)
            services.purpose_publish_version(purpose=obj, title=title, text=text)
        else:
            created = services.purpose_create(
                key=obj.key, name=obj.name, kind=obj.kind, field=obj.field, title=title,
                text=text, default_selected=obj.default_selected,
                visibility_rule=obj.visibility_rule, ttl_days=obj.ttl_days,
            )
            obj.pk = created.pk
        if obj.default_selected:
            self.message_user(request, PLANET49, messages.WARNING)

    def save_related(self, request, form, formsets, change):
        # Versions are published by the service, never edited: nothing to write here, but the
        # admin's change message reads what the (read-only) formsets would have saved.
        for formset in formsets:
            formset.save(commit=False)

    def get_urls(self):
        return [path("report/", self.admin_site.admin_view(self.report_view),
                     name="consents_report"), *super().get_urls()]

    def report_view(self, request):
        if not request.user.has_perm("consents.view_consent"):
            return HttpResponse(status=403)
        report = selectors.consent_report()
        if request.GET.get("format") == "csv":
            response = HttpResponse(content_type="text/csv; charset=utf-8")
            response["Content-Disposition"] = 'attachment; filename="consent-report.csv"'
            writer = csv.writer(response)
            writer.writerow(["purpose", *ConsentState.values])
            for purpose, counts in report["purposes"]:
                writer.writerow([purpose.key, *(counts[s] for s in ConsentState.values)])
            writer.writerow([])
            writer.writerow(["email_opt_in", "people"])
            for value, _label, count in report["opt_in"]:
                writer.writerow([value, count])
            return response
        return render(request, "admin/consents/report.html", {
            **self.admin_site.each_context(request), "title": _("Consent report"),
            "report": report, "states": ConsentState.values,
        })


@admin.register(PolicyVersion)
class PolicyVersionAdmin(admin.ModelAdmin):
    list_display = ("version", "title", "effective_at")
    fields = ("title", "text")

    def get_readonly_fields(self, request, obj=None):
        return ("title", "text") if obj else ()

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        published = services.policy_publish(title=obj.title, text=obj.text)
        obj.pk = published.pk


@admin.register(ConsentSettings)
class ConsentSettingsAdmin(admin.ModelAdmin):
    fields = ("opt_in_accepted", "tracking_default_when_unknown", "tracking_delete_on_revoke")

    def changelist_view(self, request, extra_context=None):
        row = selectors.consent_settings()
        return HttpResponseRedirect(reverse("admin:consents_consentsettings_change",
                                            args=[row.pk]))

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        services.settings_update(**{f: form.cleaned_data[f] for f in self.fields})


@admin.register(Segment)
class SegmentAdmin(admin.ModelAdmin):
    list_display = ("name", "summary", "created_at")

    def get_form(self, request, obj=None, **kwargs):
        kwargs["widgets"] = {"rule": RuleWidget()}
        return super().get_form(request, obj, **kwargs)

    @admin.display(description=_("who"))
    def summary(self, obj):
        return rules.describe(obj.rule)

    def save_model(self, request, obj, form, change):
        try:
            services.segment_save(segment=obj)
        except ValidationError as error:
            self.message_user(request, "; ".join(error.messages), messages.ERROR)


@admin.register(ConsentEvent)
class ConsentEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("at", "person_id", "subject", "action", "state", "source", "verified_by")
    list_filter = ("subject", "action", "source", "verified_by")
    search_fields = ("=person_id",)


# -- the Consents block on the person page ------------------------------------------------------

class ConsentInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Consent
    template = "admin/consents/consent_inline.html"
    fields = ("purpose_name", "state", "version_shown", "updated_at", "how", "history")
    readonly_fields = fields
    extra = 0
    verbose_name_plural = _("Consents")

    def has_view_permission(self, request, obj=None):
        # Shown on an existing person only; a new person has no answers yet.
        return obj is not None and super().has_view_permission(request, obj)

    def get_queryset(self, request):
        # Not InlineModelAdmin.get_queryset: it asks has_view_permission() without the person,
        # gets the add-page "no" below and would empty the block on every person. Django builds
        # this queryset only after has_view_permission(request, person) said yes.
        return super(admin.options.InlineModelAdmin, self).get_queryset(request).select_related(
            "purpose", "version", "last_event")

    @admin.display(description=_("purpose"))
    def purpose_name(self, obj):
        return obj.purpose.name  # a link would lead staff to a settings page they cannot open

    @admin.display(description=_("text version"))
    def version_shown(self, obj):
        return f"v{obj.version.version}" if obj.version else "—"

    @admin.display(description=_("source / verified"))
    def how(self, obj):
        event = obj.last_event
        if event is None:
            return "—"
        return f"{event.get_source_display()} / {event.get_verified_by_display()}"

    @admin.display(description=_("history"))
    def history(self, obj):
        events = ConsentEvent.objects.filter(person_id=obj.person_id,
                                             subject=obj.purpose.key).order_by("-seq")[:20]
        rows = format_html_join("", "<li>{} — {} ({}, {})</li>", (
            (e.at.strftime("%Y-%m-%d %H:%M"), e.state, e.source, e.verified_by) for e in events))
        proof = reverse(f"admin:{self.parent_model._meta.app_label}_"
                        f"{self.parent_model._meta.model_name}_consent_proof",
                        args=[obj.person_id, obj.purpose.key])
        return format_html('<details><summary>{}</summary><ul>{}</ul></details>'
                           '<a href="{}">{}</a>', _("events"), rows, proof, _("proof"))


class RecordConsentForm(forms.Form):
    purpose = forms.ModelChoiceField(queryset=ConsentPurpose.objects.filter(active=True),
                                     label=_("Purpose"))
    answer = forms.ChoiceField(choices=[("grant", _("Granted")), ("revoke", _("Revoked"))],
                               label=_("The person's answer"))
    note = forms.CharField(label=_("How was it given?"), max_length=500, widget=forms.Textarea(
        attrs={"rows": 3}), help_text=_("Required: e.g. 'signed paper form, 2026-11-28'. "
                                        "No personal data here."))


def proof_view(model_admin, request, object_id, purpose_key):
    """A printable proof of consent for one person and purpose."""
    if not request.user.has_perm("consents.view_consent"):
        return HttpResponse(status=403)
    person = get_object_or_404(Person, pk=object_id)
    purpose = get_object_or_404(ConsentPurpose, key=purpose_key)
    return render(request, "admin/consents/proof.html", {
        **model_admin.admin_site.each_context(request), "title": _("Proof of consent"),
        "person": person, "proof": proof_of_consent(person.pk, purpose),
        "opts": model_admin.model._meta,
    })


def record_consent_view(model_admin, request, object_id):
    person = get_object_or_404(Person, pk=object_id)
    if not request.user.has_perm("consents.add_consent"):
        return HttpResponse(status=403)
    form = RecordConsentForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        record = (services.consent_grant if form.cleaned_data["answer"] == "grant"
                  else services.consent_revoke)
        try:
            record(person=person, purpose=form.cleaned_data["purpose"], source=Source.STAFF,
                   verified_by=Verification.STAFF_USER, actor=request.user,
                   note=form.cleaned_data["note"])
        except ServiceError as error:
            form.add_error(None, error.message)
        else:
            model_admin.message_user(request, _("Answer recorded in the consent ledger."))
            info = model_admin.model._meta.app_label, model_admin.model._meta.model_name
            return HttpResponseRedirect(reverse("admin:{}_{}_change".format(*info),
                                                args=[person.pk]))
    return render(request, "admin/consents/record_consent.html", {
        **model_admin.admin_site.each_context(request), "title": _("Record an answer"),
        "form": form, "person": person, "opts": model_admin.model._meta,
    })


class ConsentFilter(admin.SimpleListFilter):
    title = _("consent")
    parameter_name = "consent"

    def lookups(self, request, model_admin):
        return [(f"{key}:{state}", f"{name}: {state}")
                for key, name in ConsentPurpose.objects.values_list("key", "name")
                for state in ConsentState.values]

    def queryset(self, request, queryset):
        if not self.value() or ":" not in self.value():
            return queryset
        key, state = self.value().split(":", 1)
        try:
            return queryset.filter(rules.to_q({"consent": key, "state": state}, fields={}))
        except rules.RuleError:
            return queryset.none()


class OutdatedVersionFilter(admin.SimpleListFilter):
    title = _("consent given to an outdated text")
    parameter_name = "outdated"

    def lookups(self, request, model_admin):
        return list(ConsentPurpose.objects.values_list("key", "name"))

    def queryset(self, request, queryset):
        purpose = ConsentPurpose.objects.filter(key=self.value()).first()
        if purpose is None:
            return queryset
        return queryset.filter(pk__in=selectors.people_on_outdated_versions(purpose).values("pk"))


class SegmentFilter(admin.SimpleListFilter):
    title = _("segment")
    parameter_name = "segment"

    def lookups(self, request, model_admin):
        return [(str(pk), name) for pk, name in Segment.objects.values_list("pk", "name")]

    def queryset(self, request, queryset):
        segment = Segment.objects.filter(pk=self.value()).first() if (
            self.value() or "").isdigit() else None
        return queryset.filter(rules.to_q(segment.rule)) if segment else queryset


def _extend_person_admins():
    extensions.person_inlines.append(ConsentInline)
    extensions.person_list_filters.extend([ConsentFilter, OutdatedVersionFilter, SegmentFilter])
    extensions.person_pages.extend([
        extensions.PersonPage("record-consent/", "record_consent", record_consent_view),
        extensions.PersonPage("consent-proof/<slug:purpose_key>/", "consent_proof", proof_view),
    ])


_extend_person_admins()
