"""Staff UI for importing and exporting people: upload → map columns → preview → run, with
progress; and the "Export to CSV" action on the people lists. Views parse and call
`crm.imports` / `crm.exports`; the rules stay in the person service."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from . import exports, imports
from .models import ImportJob
from .services import Source


class UploadForm(forms.Form):
    file = forms.FileField(label=_("CSV file"), help_text=_(
        "UTF-8, first line naming the columns. Sensitive columns are encrypted on the way in."))


class MappingForm(forms.Form):
    """One choice per column of the file: the field it fills, or nothing."""

    def __init__(self, *args, header: list[str], fields: dict[str, str], initial_mapping: dict,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.header = header
        choices = [("", _("— ignore —"))] + [(k, f"{label} ({k})") for k, label in fields.items()]
        for index, column in enumerate(header):
            self.fields[f"column_{index}"] = forms.ChoiceField(
                label=column or _("(unnamed column %(n)d)") % {"n": index + 1}, choices=choices,
                required=False, initial=initial_mapping.get(column, ""),
            )

    def mapping(self) -> dict[str, str]:
        return {column: self.cleaned_data[f"column_{index}"]
                for index, column in enumerate(self.header) if column}


class PersonImportExportMixin:
    """Import views and the export action, mixed into the people admins (crm/admin.py)."""

    change_list_template = "admin/crm/person/change_list.html"

    def get_urls(self):
        info = self.model._meta.app_label, self.model._meta.model_name
        return [
            path("import/", self.admin_site.admin_view(self.import_upload_view),
                 name="{}_{}_import".format(*info)),
            path("import/<uuid:job_id>/", self.admin_site.admin_view(self.import_job_view),
                 name="{}_{}_import_job".format(*info)),
            *super().get_urls(),
        ]

    def _context(self, request, **extra):
        return {**self.admin_site.each_context(request), "opts": self.model._meta, **extra}

    def import_upload_view(self, request):
        if not request.user.has_perm("crm.add_importjob"):
            raise PermissionDenied
        form = UploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                job = imports.import_job_create(upload=upload, user=request.user,
                                                source=Source.STAFF, file_name=upload.name)
            except ValidationError as error:
                form.add_error("file", error.message_dict.get("file", error.messages))
            else:
                return redirect(self._job_url(job))
        return TemplateResponse(request, "admin/crm/person/import_upload.html", self._context(
            request, title=_("Import people from CSV"), form=form))

    def import_job_view(self, request, job_id):
        if not request.user.has_perm("crm.view_importjob"):
            raise PermissionDenied
        job = get_object_or_404(ImportJob, pk=job_id)
        context = self._context(request, title=_("Import %(file)s") % {"file": job.file_name},
                                job=job)
        if job.state != ImportJob.State.DRAFT:
            context["refresh"] = job.state in (ImportJob.State.QUEUED, ImportJob.State.RUNNING)
            return TemplateResponse(request, "admin/crm/person/import_job.html", context)
        if not request.user.has_perm("crm.add_importjob"):
            raise PermissionDenied
        fields = imports.importable_fields()
        initial = job.mapping or imports.default_mapping(job.header, fields)
        form = MappingForm(request.POST or None, header=job.header, fields=fields,
                           initial_mapping=initial)
        if request.method == "POST" and form.is_valid():
            try:
                imports.import_job_set_mapping(job=job, mapping=form.mapping())
                if "start" in request.POST:
                    imports.import_job_start(job=job)
                    self.message_user(request, _("The import is running."), messages.SUCCESS)
                    return redirect(self._job_url(job))
                context["preview"] = imports.import_preview(job=job)
                context["preview_fields"] = list(dict.fromkeys(job.mapping.values()))
            except ValidationError as error:
                for message in error.messages:
                    form.add_error(None, message)
        context["form"] = form
        return TemplateResponse(request, "admin/crm/person/import_job.html", context)

    def _job_url(self, job):
        info = self.model._meta.app_label, self.model._meta.model_name
        return reverse("admin:{}_{}_import_job".format(*info), args=[job.pk],
                       current_app=self.admin_site.name)

    @admin.action(description=_("Export selected to CSV"), permissions=["view"])
    def export_csv(self, request, queryset):
        return exports.csv_response(queryset, user=request.user)


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    """The list of imports; each links to its page (progress, counts, row errors)."""

    list_display = ("file_name", "state", "progress", "created_count", "duplicate_count",
                    "stopped_count", "error_count", "created_by", "created_at")
    list_filter = ("state",)
    list_select_related = ("created_by",)

    @admin.display(description=_("progress"))
    def progress(self, job):
        url = reverse("admin:crm_person_import_job", args=[job.pk])
        return format_html('<a href="{}">{} / {}</a>', url, job.processed_rows, job.total_rows)

    def add_view(self, request, form_url="", extra_context=None):
        # "Add" is the upload step of the people admin's import flow.
        from .models import Person

        return self.admin_site._registry[Person].import_upload_view(request)

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
