"""Email on the staff person page: the opt-in status moves staff may make, sending the double
opt-in request (one person, or a selection), and the conversation with its compose and record
pages (campaigns.admin_compose). Added to crm's person admins upward."""

from collections import Counter

from django import forms
from django.contrib import admin, messages
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.translation import gettext_lazy as _

from consents.models import ConsentEvent, Verification
from crm import extensions
from crm.errors import ServiceError
from crm.models import EmailOptIn, MarketingList, Person

from .admin_compose import (
    ConversationFormSet,
    ConversationInline,
    PersonBlock,
    compose_link,
    compose_view,
    inbound_link,
    record_inbound_view,
)
from .double_opt_in import NotSent, double_opt_in_send
from .models import TrackingEvent
from .optin import Actor, opt_in_change, staff_choices
from .tracking import events_for


class OptInForm(forms.Form):
    move = forms.ChoiceField(label=_("Change"))
    note = forms.CharField(label=_("Why? (required)"), max_length=500,
                           widget=forms.Textarea(attrs={"rows": 3}))

    def __init__(self, *args, choices, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["move"].choices = choices


def opt_in_view(model_admin, request, object_id):
    person = get_object_or_404(Person, pk=object_id)
    if not request.user.has_perm("crm.change_person"):
        return HttpResponse(status=403)
    choices = staff_choices(person.email_opt_in)
    form = OptInForm(request.POST or None, choices=choices)
    back = reverse(f"admin:{model_admin.model._meta.app_label}_"
                   f"{model_admin.model._meta.model_name}_change", args=[person.pk])
    if request.method == "POST" and choices and form.is_valid():
        try:
            opt_in_change(person=person, actor=Actor.STAFF, wanted=form.cleaned_data["move"],
                          user=request.user, note=form.cleaned_data["note"],
                          verified_by=Verification.STAFF_USER)
        except ServiceError as error:
            form.add_error(None, error.message)
        else:
            model_admin.message_user(request, _("Email opt-in status changed."))
            return HttpResponseRedirect(back)
    return render(request, "admin/campaigns/opt_in.html", {
        **model_admin.admin_site.each_context(request), "title": _("Email opt-in status"),
        "person": person, "form": form, "choices": choices, "back": back,
        "contact_opted_out": person.email_opt_in == EmailOptIn.OPT_OUT_CONTACT,
        "history": ConsentEvent.objects.filter(person_id=person.pk, subject="email_opt_in")
        .order_by("-seq")[:50], "state_labels": dict(EmailOptIn.choices),
        "opts": model_admin.model._meta,
    })


@admin.action(description=_("Send the double opt-in email"), permissions=["change"])
def send_double_opt_in(model_admin, request, queryset):
    counts = Counter()
    for person in queryset:
        try:
            double_opt_in_send(person=person, source="staff")
            counts["sent"] += 1
        except NotSent as refused:
            counts[getattr(refused, "reason", "already_confirmed")] += 1
    model_admin.message_user(request, _("Double opt-in: %(counts)s.") % {
        "counts": ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))}, messages.INFO)


@admin.action(description=_("Send the double opt-in email to every member"),
              permissions=["change"])
def send_double_opt_in_to_list(model_admin, request, queryset):
    from .double_opt_in import double_opt_in_batch_start

    for marketing_list in queryset:
        double_opt_in_batch_start(marketing_list=marketing_list, user=request.user)
    model_admin.message_user(request, _("Sending in the background; the counts by reason "
                                        "appear under Double opt-in batches."))


class TrackingEventsFormSet(ConversationFormSet):
    """No forms, only the `events` list (and the same tolerance of a missing management form)."""

    @cached_property
    def events(self):
        return list(events_for(self.instance.pk))


class TrackingEventsInline(PersonBlock):
    """Opens and clicks on the person page, newest first: a read-only block. Only recorded while
    tracking consent allowed it; gone when the person revokes it (setting) or is erased."""

    model = TrackingEvent
    formset = TrackingEventsFormSet
    template = "admin/campaigns/tracking_inline.html"
    verbose_name_plural = _("Opens and clicks")


def _opt_in_link(request, person):
    if not request.user.has_perm("crm.change_person"):
        return None
    return (_("Email opt-in…"), reverse("admin:crm_person_email_opt_in", args=[person.pk]))


def extend_person_admins():
    extensions.person_actions.append(send_double_opt_in)
    extensions.person_pages.extend([
        extensions.PersonPage("email-opt-in/", "email_opt_in", opt_in_view),
        extensions.PersonPage("send-email/", "send_email", compose_view),
        extensions.PersonPage("record-inbound/", "record_inbound", record_inbound_view),
    ])
    extensions.person_inlines.extend([ConversationInline, TrackingEventsInline])
    extensions.person_links.extend([_opt_in_link, compose_link, inbound_link])
    list_admin = admin.site._registry.get(MarketingList)
    if list_admin is not None:
        list_admin.actions = (*(list_admin.actions or ()), send_double_opt_in_to_list)
