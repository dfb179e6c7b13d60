"""Staff surfaces of the data-subject rights: the person page's rights actions (stop processing,
lift the stop, record an erasure request, erase) and the requests register.

Views and actions only parse, ask `crm.rights`, and render; who may do what is the permission
each service names (`crm.lift_processing_stop`, `crm.erase_person`, Admins only).
"""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import BooleanField, Case, Value, When
from django.http import HttpResponseRedirect
from django.shortcuts import render
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from config import clock

from . import rights
from .errors import ServiceError
from .models import FieldDefinition, Person, RightsRequest
from .services import Source


class StopForm(forms.Form):
    note = forms.CharField(
        label=_("How did the person ask?"), required=False, max_length=1000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=_("Kept in the requests register. No personal data beyond what is needed."))


class LiftForm(forms.Form):
    reason = forms.CharField(
        label=_("Why may processing resume?"), max_length=1000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=_("Recorded with your name. The person is emailed before the stop lifts."))


class EraseForm(forms.Form):
    confirm = forms.BooleanField(
        label=_("I understand this cannot be undone"), required=True)


class ErasureRequestForm(StopForm):
    pass


def _what_erasure_clears() -> list[str]:
    """Labels of what `person_erase` clears, for the confirmation page."""
    core, custom = rights.erasable_fields()
    labels = dict(FieldDefinition.objects.values_list("key", "label"))
    names = [str(labels.get(name) or Person._meta.get_field(name).verbose_name)
             for name in core]
    names = [name[:1].upper() + name[1:] for name in names]
    names += [labels.get(key, key) for key in custom]
    return names


class PersonRightsMixin:
    """Mixed into crm's PersonAdmin (and so its Lead and Contact admins)."""

    rights_actions = ("stop_processing", "lift_processing_stop", "erase_personal_data")

    # -- permissions --------------------------------------------------------------------------
    def has_lift_permission(self, request):
        return request.user.has_perm(rights.LIFT_PERMISSION)

    def has_erase_permission(self, request):
        return request.user.has_perm(rights.ERASE_PERMISSION)

    def has_record_rights_permission(self, request):
        # A stopped record refuses `change` for its form; recording a request is not an edit.
        return super().has_change_permission(request)

    # -- urls and person-page links -------------------------------------------------------------
    def get_urls(self):
        info = self.model._meta.app_label, self.model._meta.model_name
        views = [
            ("stop-processing", self.stop_view, "stop"),
            ("lift-stop", self.lift_view, "lift"),
            ("erasure-request", self.erasure_request_view, "erasure_request"),
            ("erase", self.erase_view, "erase"),
        ]
        return [
            path(f"<path:object_id>/{suffix}/", self.admin_site.admin_view(view),
                 name="{}_{}_{}".format(*info, name))
            for suffix, view, name in views
        ] + super().get_urls()

    def _url(self, name, person):
        info = self.model._meta.app_label, self.model._meta.model_name
        return reverse("admin:{}_{}_{}".format(*info, name), args=[person.pk],
                       current_app=self.admin_site.name)

    def rights_links(self, request, person) -> list[tuple[str, str]]:
        links = []
        if person.erased_at is not None:
            return links
        may_record = self.has_record_rights_permission(request)
        if person.processing_stopped_at is None and may_record:
            links.append((_("Stop processing"), self._url("stop", person)))
        if person.processing_stopped_at is not None and self.has_lift_permission(request):
            links.append((_("Lift processing stop"), self._url("lift", person)))
        if person.erasure_requested_at is None and may_record:
            links.append((_("Record erasure request"), self._url("erasure_request", person)))
        if self.has_erase_permission(request):
            links.append((_("Erase personal data"), self._url("erase", person)))
        return links

    def change_view(self, request, object_id, form_url="", extra_context=None):
        person = self.get_object(request, object_id)
        if person is not None:
            extra_context = {**(extra_context or {}),
                             "rights_links": self.rights_links(request, person)}
        return super().change_view(request, object_id, form_url, extra_context)

    # -- one person ---------------------------------------------------------------------------
    def _person_or_404(self, request, object_id):
        person = self.get_object(request, object_id)
        if person is None or not self.has_view_permission(request, person):
            raise PermissionDenied
        return person

    def _page(self, request, *, title, form, intro, people, clears=None, action=""):
        return render(request, "admin/crm/person/rights_form.html", {
            **self.admin_site.each_context(request),
            "title": title, "form": form, "intro": intro, "people": people,
            "clears": clears, "action": action, "opts": self.model._meta,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        })

    def _back(self, person):
        return HttpResponseRedirect(self._url("change", person))

    def _run_one(self, request, person, call, done: str):
        try:
            call()
        except ServiceError as error:
            self.message_user(request, error.message, messages.ERROR)
        else:
            self.message_user(request, done, messages.SUCCESS)
        return self._back(person)

    def stop_view(self, request, object_id):
        person = self._person_or_404(request, object_id)
        if not self.has_record_rights_permission(request):
            raise PermissionDenied
        form = StopForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            return self._run_one(request, person, lambda: rights.processing_stop(
                person=person, source=Source.STAFF, actor=request.user,
                note=form.cleaned_data["note"]), _("Processing stopped; the record is locked."))
        return self._page(request, title=_("Stop processing"), form=form, people=[person],
                          intro=[_("Record the person's request to stop processing their data "
                                   "(GDPR Art. 18). The record becomes read-only everywhere "
                                   "and receives no email but rights-related mail.")])

    def lift_view(self, request, object_id):
        person = self._person_or_404(request, object_id)
        if not self.has_lift_permission(request):
            raise PermissionDenied
        form = LiftForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            return self._run_one(request, person, lambda: rights.processing_resume(
                person=person, source=Source.STAFF, actor=request.user,
                reason=form.cleaned_data["reason"]),
                _("Processing resumed; the person was emailed."))
        return self._page(request, title=_("Lift processing stop"), form=form, people=[person],
                          intro=[_("The person asked us to stop processing their data. Lift "
                                   "it only with a reason you can defend; it is recorded with "
                                   "your name and the person is emailed first.")])

    def erasure_request_view(self, request, object_id):
        person = self._person_or_404(request, object_id)
        if not self.has_record_rights_permission(request):
            raise PermissionDenied
        form = ErasureRequestForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            return self._run_one(request, person, lambda: rights.erasure_request(
                person=person, source=Source.STAFF, actor=request.user,
                note=form.cleaned_data["note"]),
                _("Erasure request recorded; it is due within one month."))
        return self._page(request, title=_("Record an erasure request"), form=form,
                          people=[person],
                          intro=[_("The person asked to be erased (GDPR Art. 17). The request "
                                   "goes into the register, due in one month; an admin then "
                                   "erases the personal data.")])

    def erase_view(self, request, object_id):
        person = self._person_or_404(request, object_id)
        if not self.has_erase_permission(request):
            raise PermissionDenied
        form = EraseForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            return self._run_one(request, person, lambda: rights.person_erase(
                person=person, source=Source.STAFF, actor=request.user),
                _("Personal data erased. The record remains as a tombstone."))
        return self._page(request, title=_("Erase personal data"), form=form, people=[person],
                          clears=_what_erasure_clears(), intro=_ERASE_INTRO)

    # -- actions on a selection ---------------------------------------------------------------
    def _selection(self, request, queryset, *, form_class, title, intro, action, apply,
                   clears=None):
        form = form_class(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            done = failed = 0
            for person in queryset:
                try:
                    apply(person, form.cleaned_data)
                    done += 1
                except ServiceError:
                    failed += 1
            self.message_user(request, ngettext("%(count)d person done.",
                                                "%(count)d people done.", done)
                              % {"count": done}, messages.SUCCESS)
            if failed:
                self.message_user(request, _("%(count)d refused.") % {"count": failed},
                                  messages.WARNING)
            return None
        return self._page(request, title=title, form=form, intro=intro, people=list(queryset),
                          clears=clears, action=action)

    @admin.action(description=_("Stop processing (recorded request)…"),
                  permissions=["record_rights"])
    def stop_processing(self, request, queryset):
        return self._selection(
            request, queryset.filter(processing_stopped_at__isnull=True,
                                     erased_at__isnull=True),
            form_class=StopForm, title=_("Stop processing"), action="stop_processing",
            intro=[_("Record each person's request to stop processing (GDPR Art. 18).")],
            apply=lambda p, data: rights.processing_stop(
                person=p, source=Source.STAFF, actor=request.user, note=data["note"]))

    @admin.action(description=_("Lift processing stop…"), permissions=["lift"])
    def lift_processing_stop(self, request, queryset):
        return self._selection(
            request, queryset.filter(processing_stopped_at__isnull=False),
            form_class=LiftForm, title=_("Lift processing stop"), action="lift_processing_stop",
            intro=[_("Each person is emailed before their stop lifts; your reason is recorded.")],
            apply=lambda p, data: rights.processing_resume(
                person=p, source=Source.STAFF, actor=request.user, reason=data["reason"]))

    @admin.action(description=_("Erase personal data…"), permissions=["erase"])
    def erase_personal_data(self, request, queryset):
        return self._selection(
            request, queryset.filter(erased_at__isnull=True), form_class=EraseForm,
            title=_("Erase personal data"), action="erase_personal_data", intro=_ERASE_INTRO,
            clears=_what_erasure_clears(),
            apply=lambda p, data: rights.person_erase(
                person=p, source=Source.STAFF, actor=request.user))

    # -- "Delete record" ----------------------------------------------------------------------
    def delete_model(self, request, obj):
        rights.person_delete_record(person=obj, actor=request.user, source=Source.STAFF)

    def delete_queryset(self, request, queryset):
        for person in queryset:
            self.delete_model(request, person)


_ERASE_INTRO = [
    _("This clears the personal data below for good (GDPR Art. 17): the values, the encryption "
      "key of the sensitive ones, the stored email bodies and the messages the person sent."),
    _("What stays: a tombstone record with no personal data, a keyed hash of the address on "
      "the suppression list (so a re-import is never mailed), and the consent ledger, which "
      "holds no personal data."),
]


# -- the register ---------------------------------------------------------------------------------

class OverdueFilter(admin.SimpleListFilter):
    title = _("deadline")
    parameter_name = "deadline"

    def lookups(self, request, model_admin):
        return [("overdue", _("Overdue")), ("week", _("Due within 7 days"))]

    def queryset(self, request, queryset):
        now = clock.now()
        open_ = queryset.filter(state=RightsRequest.State.OPEN)
        if self.value() == "overdue":
            return open_.filter(due_at__lt=now)
        if self.value() == "week":
            from datetime import timedelta

            return open_.filter(due_at__gte=now, due_at__lt=now + timedelta(days=7))
        return queryset


class RightsRequestAddForm(forms.ModelForm):
    class Meta:
        model = RightsRequest
        fields = ["person", "kind", "note"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["person"].required = True

    def _post_clean(self):
        pass  # the service validates and writes


class RightsRequestCloseForm(forms.ModelForm):
    close_as = forms.ChoiceField(
        label=_("Close the request"), required=False,
        choices=[("", _("— keep open —")), (RightsRequest.State.DONE, _("Done")),
                 (RightsRequest.State.REFUSED, _("Refused (say why below)"))])
    close_note = forms.CharField(label=_("Note"), required=False, max_length=1000,
                                 widget=forms.Textarea(attrs={"rows": 3}))

    class Meta:
        model = RightsRequest
        fields = []

    def _post_clean(self):
        pass


@admin.register(RightsRequest)
class RightsRequestAdmin(admin.ModelAdmin):
    """The register of data-subject requests, with the statutory deadline (Admins)."""

    list_display = ("received_at", "kind", "person_link", "deadline", "state", "source",
                    "handled_by", "handled_at", "lifted_at")
    list_filter = ("state", "kind", OverdueFilter, "source")
    list_select_related = ("person", "handled_by")
    search_fields = ("=person_ref",)
    raw_id_fields = ("person",)
    actions = ("close_done",)
    readonly_fields = ("person_link", "person_ref", "kind", "source", "state", "received_at",
                       "deadline", "handled_by", "handled_at", "note", "lifted_at",
                       "lifted_by", "lift_reason")

    def get_queryset(self, request):
        # Open requests first, the nearest deadline on top: the register is a work queue.
        return RightsRequest.objects.annotate(is_open=Case(
            When(state=RightsRequest.State.OPEN, then=Value(True)), default=Value(False),
            output_field=BooleanField())).order_by(*self.get_ordering(request))

    def get_ordering(self, request):
        # Not `ordering`: the system check only accepts model fields there.
        return ("-is_open", "due_at")

    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs["form"] = RightsRequestAddForm if obj is None else RightsRequestCloseForm
        kwargs["fields"] = (["person", "kind", "note"] if obj is None
                            else ["close_as", "close_note"])
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return [(None, {"fields": ["person", "kind", "note"]})]
        fieldsets = [(None, {"fields": list(self.readonly_fields)})]
        if obj.state == RightsRequest.State.OPEN:
            fieldsets.append((_("Handle"), {"fields": ["close_as", "close_note"]}))
        return fieldsets

    @admin.display(description=_("person"))
    def person_link(self, obj):
        if obj.person_id is None:
            return _("(record deleted)")
        if obj.person.erased_at is not None:
            return _("(erased)")
        url = reverse("admin:crm_person_change", args=[obj.person_id])
        return format_html('<a href="{}">{}</a>', url, obj.person)

    @admin.display(description=_("due"), ordering="due_at")
    def deadline(self, obj):
        text = obj.due_at.strftime("%Y-%m-%d")
        if obj.state == RightsRequest.State.OPEN and obj.due_at < clock.now():
            return format_html('<span class="flag flag-stopped overdue">{} · {}</span>', text,
                               _("overdue"))
        return text

    def save_model(self, request, obj, form, change):
        if not change:
            saved = rights.rights_request_record(
                person=form.cleaned_data["person"], kind=form.cleaned_data["kind"],
                source=Source.STAFF, actor=request.user, note=form.cleaned_data.get("note", ""))
            obj.pk = saved.pk
            return
        if form.cleaned_data.get("close_as"):
            rights.rights_request_close(request=obj, actor=request.user,
                                        note=form.cleaned_data.get("close_note", ""),
                                        state=form.cleaned_data["close_as"])

    def save_related(self, request, form, formsets, change):
        pass

    def has_delete_permission(self, request, obj=None):
        return False  # the register is the controller's proof of answering in time

    @admin.action(description=_("Close as done"), permissions=["change"])
    def close_done(self, request, queryset):
        count = 0
        for request_ in queryset.filter(state=RightsRequest.State.OPEN):
            rights.rights_request_close(request=request_, actor=request.user)
            count += 1
        self.message_user(request, ngettext("%(count)d request closed.",
                                            "%(count)d requests closed.", count)
                          % {"count": count}, messages.SUCCESS)

