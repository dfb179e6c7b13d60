"""Staff UI for people. Higher apps add their blocks to `PersonAdmin` (see DESIGN.md); this module
imports nothing above crm. Every save goes through crm.services."""

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.http import JsonResponse
from django.shortcuts import render
from django.urls import path
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from config.readonly_admin import ReadOnlyAdminMixin

from . import extensions, lists, selectors, services
from .admin_imports import PersonImportExportMixin
from .admin_lists import report_list_add  # also registers the marketing list admin
from .admin_rights import PersonRightsMixin
from .errors import ServiceError
from .forms import custom_form_field, custom_value_for_service
from .models import (
    AuditEntry,
    Contact,
    FieldDefinition,
    Lead,
    MarketingList,
    Organisation,
    Person,
)
from .paginator import CappedCountPaginator
from .registry import (
    CORE_EDITABLE,
    ENCRYPTED_CORE,
    custom_definitions,
    display_custom,
    is_sealed,
)
from .reveal import person_reveal, revealable_fields

admin.site.site_header = _("Consenso")
admin.site.site_title = _("Consenso")
admin.site.index_title = _("Leads, contacts and their choices")

CUSTOM_PREFIX = "custom__"


class PersonForm(forms.ModelForm):
    """The person form: core fields plus one real form field per active custom field."""

    class Meta:
        model = Person
        fields = ["kind", *(f for f in CORE_EDITABLE if f not in ENCRYPTED_CORE), "email_opt_in"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.creating = self.instance._state.adding
        for name in ENCRYPTED_CORE:
            stored = str(getattr(self.instance, name) or "")
            self.fields[name] = forms.CharField(
                label=Person._meta.get_field(f"{name}_mask").verbose_name.capitalize(),
                required=False, max_length=64,
                widget=forms.TextInput(attrs={"autocomplete": "off"}),
                help_text=(_("Stored: %(mask)s. Type a new value to replace it.") % {
                    "mask": stored} if stored else _("Encrypted at rest, masked to staff.")),
            )
        if "email_opt_in" in self.fields:
            self.fields["email_opt_in"].choices = [
                (value, label) for value, label in self.fields["email_opt_in"].choices
                if value in services.OPT_IN_ON_CREATE
            ]
        if "owner" in self.fields:
            self.fields["owner"].queryset = get_user_model().objects.filter(
                is_staff=True, is_active=True
            )
        self.definitions = custom_definitions()
        shown = display_custom(self.instance.custom)
        for definition in self.definitions:
            value = (self.instance.custom or {}).get(definition.key)
            # An encrypted field's value is never put in the form, sealed or still waiting to be.
            field = custom_form_field(
                definition, None if definition.is_encrypted or is_sealed(value) else value)
            if definition.is_encrypted:
                field.help_text = (_("Stored: %(mask)s. Type a new value to replace it.")
                                   % {"mask": shown[definition.key]} if value
                                   else _("Encrypted at rest, masked to staff."))
            self.fields[CUSTOM_PREFIX + definition.key] = field
        for name in self.instance.locked_fields or []:
            field = self.fields.get(name) or self.fields.get(CUSTOM_PREFIX + name)
            if field is not None:
                field.disabled = True
                field.help_text = _("Locked: the person withdrew consent to store this field.")

    def service_data(self) -> dict:
        names = list(self.fields) if self.creating else self.changed_data
        data, custom = {}, {}
        for name in names:
            if name not in self.cleaned_data or self.fields[name].disabled:
                continue
            if name.startswith(CUSTOM_PREFIX):
                custom[name.removeprefix(CUSTOM_PREFIX)] = custom_value_for_service(
                    self.cleaned_data[name]
                )
            else:
                data[name] = self.cleaned_data[name]
        if custom or self.creating:
            data["custom"] = custom
        return data

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        try:
            services.person_clean(
                self.service_data(), person=None if self.creating else self.instance
            )
        except ValidationError as error:
            for field, messages_ in error.message_dict.items():
                name = field.replace("custom.", CUSTOM_PREFIX)
                self.add_error(name if name in self.fields else None, messages_)
        except ServiceError as error:
            field = error.field if error.field in self.fields else None
            self.add_error(field, error.message)
        return cleaned

    def _post_clean(self):
        # The service validates and writes; the model-level validation a ModelForm would run
        # here (and its construct_instance) would only restate the service's rules.
        pass


class _DateSetFilter(admin.SimpleListFilter):
    """Yes/no on whether a rights timestamp (`field`) is set."""

    field = ""
    labels = ("", "")

    def lookups(self, request, model_admin):
        return [("yes", self.labels[0]), ("no", self.labels[1])]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(**{f"{self.field}__isnull": self.value() == "no"})
        return queryset


class ProcessingStoppedFilter(_DateSetFilter):
    title = _("processing stopped")
    parameter_name = "processing_stopped"
    field = "processing_stopped_at"
    labels = (_("Stopped"), _("Not stopped"))


class ErasureRequestedFilter(_DateSetFilter):
    title = _("erasure requested")
    parameter_name = "erasure_requested"
    field = "erasure_requested_at"
    labels = (_("Requested"), _("Not requested"))


class OwnerFilter(admin.SimpleListFilter):
    title = _("owner")
    parameter_name = "owner"

    def lookups(self, request, model_admin):
        users = get_user_model().objects.filter(is_staff=True).order_by("username")
        return [("me", _("Mine")), ("none", _("Unassigned"))] + [
            (str(u.pk), u.get_full_name() or u.get_username()) for u in users
        ]

    def queryset(self, request, queryset):
        value = self.value()
        if value == "me":
            return queryset.filter(owner=request.user)
        if value == "none":
            return queryset.filter(owner__isnull=True)
        if value and value.isdigit():
            return queryset.filter(owner_id=int(value))
        return queryset


class AssignOwnerForm(forms.Form):
    owner = forms.ModelChoiceField(
        queryset=get_user_model().objects.none(), label=_("New owner"), required=False,
        empty_label=_("(unassigned)"),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["owner"].queryset = get_user_model().objects.filter(
            is_staff=True, is_active=True
        ).order_by("username")


class AddToListForm(forms.Form):
    marketing_list = forms.ModelChoiceField(
        queryset=MarketingList.objects.all(), label=_("Marketing list")
    )


def _intermediate(modeladmin, request, queryset, *, form_class, title, action, apply):
    """Shared flow for actions that ask one question first (owner, list) and then apply."""
    form = form_class(request.POST if "apply" in request.POST else None)
    if "apply" in request.POST and form.is_valid():
        apply(form.cleaned_data, list(queryset.values_list("pk", flat=True)))
        return None
    return render(request, "admin/crm/person/action_form.html", {
        **modeladmin.admin_site.each_context(request),
        "title": title, "form": form, "queryset": queryset, "action": action,
        "opts": modeladmin.model._meta,
        "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
    })


def _report_bulk(modeladmin, request, result, done_message):
    modeladmin.message_user(request, done_message % {"count": result.done}, messages.SUCCESS)
    if result.skipped_stopped:
        modeladmin.message_user(
            request,
            ngettext(
                "%(count)d record skipped: processing is stopped.",
                "%(count)d records skipped: processing is stopped.",
                result.skipped_stopped,
            ) % {"count": result.skipped_stopped},
            messages.WARNING,
        )


class PersonAdmin(PersonRightsMixin, PersonImportExportMixin, admin.ModelAdmin):
    form = PersonForm
    change_form_template = "admin/crm/person/change_form.html"
    list_display = (
        "display_name", "email", "company", "stage", "region", "owner", "opt_in_badge",
        "rights_flags", "created_at",
    )
    list_display_links = ("display_name",)
    list_filter = (
        "kind", "stage", "region", OwnerFilter, "email_opt_in", ProcessingStoppedFilter,
        ErasureRequestedFilter,
    )
    search_fields = ("first_name", "last_name", "email", "company", "national_id_mask",
                     "card_number_mask")
    list_select_related = ("owner",)
    list_per_page = 50
    show_full_result_count = False
    paginator = CappedCountPaginator
    ordering = ("-created_at",)
    own_actions = ("convert_to_contact", "assign_owner", "add_to_marketing_list", "export_csv",
                   *PersonRightsMixin.rights_actions)

    # What higher apps add (crm.extensions), read when asked: crm imports nothing above it.
    @property
    def actions(self):
        return (*self.own_actions, *extensions.person_actions)

    def get_list_filter(self, request):
        return (*super().get_list_filter(request), *extensions.person_list_filters)

    def get_inlines(self, request, obj):
        return [*super().get_inlines(request, obj), *extensions.person_inlines]
    readonly_base = (
        "id", "processing_stopped_at", "erasure_requested_at", "erased_at", "locked_fields",
        "converted_at", "created_at", "updated_at", "history",
    )

    # -- layout -------------------------------------------------------------------------------
    def get_fieldsets(self, request, obj=None):
        head = ["first_name", "last_name", "email", "phone", "language"]
        rights = ["email_opt_in", "processing_stopped_at", "erasure_requested_at", "erased_at",
                  "locked_fields"]
        fieldsets = [
            (None, {"fields": ["kind", *head]}),
            (_("Company"), {"fields": ["company", "organisation", "country", "region", "stage",
                                       "owner"]}),
        ]
        fieldsets.append((_("Sensitive data"), {"fields": list(ENCRYPTED_CORE)}))
        keys = [CUSTOM_PREFIX + d.key for d in custom_definitions()]
        if keys:
            fieldsets.append((_("Custom fields"), {"fields": keys}))
        fieldsets.append((_("Email and rights"), {"fields": rights}))
        if obj is not None:
            fieldsets.append((_("Record"), {
                "fields": ["id", "converted_at", "created_at", "updated_at", "history"],
                "classes": ["collapse"],
            }))
        return fieldsets

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return self.readonly_base
        return (*self.readonly_base, "kind", "email_opt_in")

    def get_form(self, request, obj=None, change=False, **kwargs):
        readonly = set(self.get_readonly_fields(request, obj))
        kwargs["fields"] = [
            f for f in flatten_fieldsets(self.get_fieldsets(request, obj))
            if not f.startswith(CUSTOM_PREFIX) and f not in readonly and f not in ENCRYPTED_CORE
        ]
        return super().get_form(request, obj, change=change, **kwargs)

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        initial.setdefault("kind", self.default_kind)
        initial.setdefault("owner", request.user.pk)
        return initial

    default_kind = "lead"

    # -- columns ------------------------------------------------------------------------------
    @admin.display(description=_("name"), ordering="last_name")
    def display_name(self, obj):
        return obj.full_name or _("(no name)")

    @admin.display(description=_("email opt-in"), ordering="email_opt_in")
    def opt_in_badge(self, obj):
        return format_html(
            '<span class="optin optin-{}">{}</span>', obj.email_opt_in,
            obj.get_email_opt_in_display(),
        )

    @admin.display(description=_("rights"))
    def rights_flags(self, obj):
        flags = []
        if obj.processing_stopped_at:
            flags.append(("flag-stopped", _("stopped")))
        if obj.erasure_requested_at:
            flags.append(("flag-erasure", _("erasure requested")))
        if obj.erased_at:
            flags.append(("flag-erased", _("erased")))
        return format_html_join(" ", '<span class="flag {}">{}</span>', flags) or "—"

    @admin.display(description=_("history"))
    def history(self, obj):
        entries = selectors.person_history(obj, limit=20)
        rows = format_html_join(
            "", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (e.at.strftime("%Y-%m-%d %H:%M"), e.action, ", ".join(e.fields) or "—",
                 e.actor.get_username() if e.actor else "—",
                 f"{e.source}: {e.import_job.file_name}" if e.import_job else e.source)
                for e in entries
            ),
        )
        return format_html(
            '<table class="audit"><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th>'
            "</tr>{}</table>",
            _("when"), _("what"), _("fields"), _("who"), _("via"), rows,
        )

    def get_search_results(self, request, queryset, search_term):
        # Also finds a full national ID or card number exactly, through its blind index.
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        exact = [pk for name in ENCRYPTED_CORE
                 for pk in selectors.find_by_identifier(name, search_term)]
        if exact:
            results = results | queryset.filter(pk__in=exact)
        return results, may_have_duplicates

    # -- reveal -------------------------------------------------------------------------------
    def get_urls(self):
        prefix = f"{self.model._meta.app_label}_{self.model._meta.model_name}_"

        def page_view(page):
            return self.admin_site.admin_view(
                lambda request, object_id, **kwargs: page.view(self, request, object_id, **kwargs))

        return [
            path("<path:object_id>/reveal/<slug:field>/",
                 self.admin_site.admin_view(self.reveal_view), name=f"{prefix}reveal"),
            *(path(f"<path:object_id>/{page.route}", page_view(page), name=prefix + page.name)
              for page in extensions.person_pages),
            *super().get_urls(),
        ]

    def reveal_view(self, request, object_id, field):
        if request.method != "POST":
            return JsonResponse({"detail": _("POST a reason to reveal.")}, status=405)
        person = self.get_object(request, object_id)
        if person is None or not self.has_view_permission(request, person):
            return JsonResponse({"detail": _("Not found.")}, status=404)
        try:
            value = person_reveal(person=person, field_key=field, user=request.user,
                                  reason=request.POST.get("reason", ""),
                                  ip=request.META.get("REMOTE_ADDR"))
        except ServiceError as error:
            return JsonResponse({"detail": error.message}, status=error.status_code)
        response = JsonResponse({"field": field, "value": value,
                                 "remask_after_seconds": settings.REVEAL_REMASK_SECONDS})
        response["Cache-Control"] = "no-store"
        return response

    def change_view(self, request, object_id, form_url="", extra_context=None):
        person = self.get_object(request, object_id)
        if person is not None:
            allowed = revealable_fields(request.user)
            shown = display_custom(person.custom)
            sensitive = [(name, str(getattr(person, name) or "")) for name in ENCRYPTED_CORE]
            sensitive += [(d.key, shown.get(d.key, "")) for d in custom_definitions()
                          if d.is_encrypted]
            labels = dict(FieldDefinition.objects.filter(is_encrypted=True)
                          .values_list("key", "label"))
            extra_context = {**(extra_context or {}), "sensitive_fields": [
                {"key": key, "label": labels.get(key, key), "mask": masked,
                 "can_reveal": key in allowed and bool(masked)}
                for key, masked in sensitive
            ], "remask_after_seconds": settings.REVEAL_REMASK_SECONDS,
                # "May we …, and why": each app that decides something adds its section.
                "explain": {name: section(person)
                            for name, section in extensions.explain_sections.items()},
                "person_links": [link for fn in extensions.person_links
                                 if (link := fn(request, person))]}
        return super().change_view(request, object_id, form_url, extra_context)

    # -- rights and saving --------------------------------------------------------------------
    def has_change_permission(self, request, obj=None):
        # A stopped record or an erased tombstone is shown read-only; crm.services refuses the
        # write anyway.
        if obj is not None and (obj.processing_stopped_at is not None
                                or obj.erased_at is not None):
            return False
        return super().has_change_permission(request, obj)

    def save_model(self, request, obj, form, change):
        data = form.service_data()
        try:
            if change:
                saved = services.person_update(
                    person=obj, data=data, actor=request.user, source=services.Source.STAFF
                )
            else:
                saved = services.person_create(
                    data=data, actor=request.user, source=services.Source.STAFF
                )
        except (ValidationError, ServiceError) as error:
            # Only reachable when another writer changed the row between clean and save.
            self.message_user(request, str(error), messages.ERROR)
            return
        obj.pk = saved.pk
        obj.refresh_from_db()
        obj._state.adding = False

    # delete_model / delete_queryset ("Delete record"): PersonRightsMixin, through crm.rights.

    def save_related(self, request, form, formsets, change):
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

    # -- actions ------------------------------------------------------------------------------
    @admin.action(description=_("Convert to contact"), permissions=["convert"])
    def convert_to_contact(self, request, queryset):
        converted = skipped = 0
        for person in queryset.filter(kind="lead"):
            try:
                services.person_convert_to_contact(
                    person=person, actor=request.user, source=services.Source.STAFF
                )
                converted += 1
            except ServiceError:
                skipped += 1
        self.message_user(
            request,
            ngettext("%(count)d lead converted.", "%(count)d leads converted.", converted)
            % {"count": converted},
        )
        if skipped:
            self.message_user(
                request, _("%(count)d skipped: processing is stopped.") % {"count": skipped},
                messages.WARNING,
            )

    def has_convert_permission(self, request):
        return request.user.has_perm("crm.convert_lead")

    @admin.action(description=_("Assign owner…"), permissions=["change"])
    def assign_owner(self, request, queryset):
        def apply(data, ids):
            result = services.person_assign_owner(
                person_ids=ids, owner=data["owner"], actor=request.user,
                source=services.Source.STAFF,
            )
            _report_bulk(self, request, result, _("Owner assigned to %(count)d people."))

        return _intermediate(self, request, queryset, form_class=AssignOwnerForm,
                             title=_("Assign an owner"), action="assign_owner", apply=apply)

    @admin.action(description=_("Add to marketing list…"), permissions=["change"])
    def add_to_marketing_list(self, request, queryset):
        def apply(data, ids):
            result = lists.list_add_people(
                marketing_list=data["marketing_list"], person_ids=ids, actor=request.user,
                source=services.Source.STAFF,
            )
            report_list_add(self, request, result)

        return _intermediate(self, request, queryset, form_class=AddToListForm,
                             title=_("Add to a marketing list"), action="add_to_marketing_list",
                             apply=apply)


@admin.register(Lead)
class LeadAdmin(PersonAdmin):
    default_kind = "lead"
    list_filter = tuple(f for f in PersonAdmin.list_filter if f != "kind")


@admin.register(Contact)
class ContactAdmin(PersonAdmin):
    default_kind = "contact"
    list_filter = tuple(f for f in PersonAdmin.list_filter if f != "kind")
    own_actions = ("assign_owner", "add_to_marketing_list", "export_csv",
                   *PersonRightsMixin.rights_actions)


admin.site.register(Person, PersonAdmin)


@admin.register(Organisation)
class OrganisationAdmin(admin.ModelAdmin):
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_display = ("name", "country", "website", "created_at")
    search_fields = ("name",)

    def save_model(self, request, obj, form, change):
        services.organisation_save(organisation=obj)


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("at", "action", "person_id", "field_list", "actor", "source")
    list_filter = ("action", "source")
    search_fields = ("=person_id",)
    list_select_related = ("actor",)

    @admin.display(description=_("fields"))
    def field_list(self, obj):
        return ", ".join(obj.fields)


    def get_search_results(self, request, queryset, search_term):
        # person_id is a UUID: a malformed term must narrow to nothing, not raise.
        try:
            return super().get_search_results(request, queryset, search_term)
        except ValidationError:
            return queryset.filter(Q(pk__in=[])), False


# Settings pages of crm that live in their own module (registered on import).
from . import admin_fields  # noqa: E402, F401
