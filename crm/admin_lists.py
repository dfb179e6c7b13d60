"""Staff UI for marketing lists: the list page, its members, and adding members from a CSV.

Every membership change goes through crm.lists / crm.services; the person list's "Add to
marketing list…" action reports through `report_list_add` too.
"""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from . import lists, services
from .models import MarketingList

SHOWN_CSV_ERRORS = 20


def report_list_add(model_admin, request, result: lists.ListAddResult) -> None:
    """One message with the counts of an add, a warning when anyone was skipped."""
    model_admin.message_user(request, _("%(count)d people added to the list.")
                             % {"count": result.added}, messages.SUCCESS)
    skipped = {
        _("already on the list"): result.already,
        _("processing stopped"): result.skipped_stopped,
        _("erased"): result.skipped_erased,
        _("unknown"): result.unknown,
    }
    if result.skipped_stopped or result.skipped_erased or result.unknown:
        model_admin.message_user(request, _("Not added: %(counts)s.") % {"counts": ", ".join(
            f"{why} {count}" for why, count in skipped.items() if count)}, messages.WARNING)
    for error in result.errors[:SHOWN_CSV_ERRORS]:
        model_admin.message_user(request, _("Line %(line)d: %(reason)s") % error,
                                 messages.WARNING)
    if len(result.errors) > SHOWN_CSV_ERRORS:
        model_admin.message_user(request, _("… and %(n)d more lines with errors.")
                                 % {"n": len(result.errors) - SHOWN_CSV_ERRORS}, messages.WARNING)


class MembersCsvForm(forms.Form):
    file = forms.FileField(label=gettext_lazy("CSV file"),
                           help_text=gettext_lazy("UTF-8, with an “email” column."))


class MembershipInline(admin.TabularInline):
    model = MarketingList.members.through
    extra = 0
    fields = ("person", "source", "added_at")
    readonly_fields = ("person", "source", "added_at")
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(MarketingList)
class MarketingListAdmin(admin.ModelAdmin):
    list_display = ("name", "description", "created_at")
    search_fields = ("name",)
    change_form_template = "admin/crm/marketinglist/change_form.html"

    def save_model(self, request, obj, form, change):
        services.marketing_list_save(marketing_list=obj)

    def delete_model(self, request, obj):
        lists.marketing_list_delete(marketing_list=obj)

    def get_urls(self):
        return [
            path("<int:object_id>/add-members/",
                 self.admin_site.admin_view(self.add_members_view),
                 name="crm_marketinglist_add_members"),
            *super().get_urls(),
        ]

    def add_members_view(self, request, object_id):
        if not request.user.has_perm("crm.add_listmembership"):
            raise PermissionDenied
        marketing_list = get_object_or_404(MarketingList, pk=object_id)
        form = MembersCsvForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                result = lists.list_add_csv(marketing_list=marketing_list,
                                            file=form.cleaned_data["file"], actor=request.user,
                                            source=services.Source.STAFF)
            except ValidationError as error:
                for message in error.message_dict.get("file", error.messages):
                    form.add_error("file", message)
            else:
                report_list_add(self, request, result)
                return redirect("admin:crm_marketinglist_change", marketing_list.pk)
        return render(request, "admin/crm/marketinglist/add_members.html", {
            **self.admin_site.each_context(request), "opts": self.model._meta,
            "original": marketing_list, "form": form,
            "title": _("Add members to %(list)s from a CSV file") % {"list": marketing_list},
        })
