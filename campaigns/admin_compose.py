"""Staff email from the person page: compose (ad-hoc or a reply), record a message the contact
sent, and the recent conversation. The pages parse and render; campaigns.conversations decides
and sends (the same services as POST /api/persons/{id}/emails/ and /inbound/)."""

from django import forms
from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.forms.models import BaseInlineFormSet
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.translation import gettext_lazy as _

from crm.errors import ServiceError

from . import gateway
from .conversations import (
    STAFF_TEMPLATES,
    NotAllowed,
    conversation_recent,
    email_compose,
    inbound_record,
    staff_template_render,
)
from .models import InboundMessage

MAY_EMAIL = "crm.change_person"  # as the API's compose and inbound endpoints


class ComposeForm(forms.Form):
    subject = forms.CharField(label=_("Subject"), max_length=998,
                              widget=forms.TextInput(attrs={"size": 80}))
    body = forms.CharField(label=_("Message"), widget=forms.Textarea(attrs={"rows": 14,
                                                                           "cols": 80}),
                           help_text=_("Plain text. The HTML part is made from it (links become "
                                       "clickable); the admins' footer is added to both."))
    in_reply_to = forms.ChoiceField(label=_("In reply to"), required=False)

    def __init__(self, *args, inbound=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["in_reply_to"].choices = [("", _("— not a reply: a new email —"))] + [
            (m.message_id, f"{m.received_at:%Y-%m-%d %H:%M} — {m.subject or _('(no subject)')}")
            for m in inbound]


class InboundForm(forms.Form):
    subject = forms.CharField(label=_("Subject"), max_length=998, required=False,
                              widget=forms.TextInput(attrs={"size": 80}))
    body = forms.CharField(label=_("Message"), required=False,
                           widget=forms.Textarea(attrs={"rows": 12, "cols": 80}))
    received_at = forms.DateTimeField(
        label=_("Received at"), required=False,
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text=_("Empty: now."))
    message_id = forms.CharField(
        label=_("Message-ID"), max_length=255, required=False,
        help_text=_("From the message's headers, e.g. <abc@mail.example>. Empty: one is made "
                    "up. Replying to it is allowed even after the contact opted out."))

    def clean(self):
        data = super().clean()
        if not (data.get("subject") or "").strip() and not (data.get("body") or "").strip():
            raise forms.ValidationError(_("Give at least a subject or the message."))
        return data


def _person_or_404(model_admin, request, object_id):
    person = model_admin.get_object(request, unquote(object_id))  # None for a malformed id too
    if person is None:
        raise Http404
    return person


def _change_url(model_admin, person) -> str:
    opts = model_admin.model._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[person.pk])


def _context(model_admin, request, person, title, **extra) -> dict:
    return {**model_admin.admin_site.each_context(request), "title": title, "person": person,
            "opts": model_admin.model._meta, "back": _change_url(model_admin, person), **extra}


def _decisions(person) -> list[dict]:
    """The gateway's answer for the two kinds staff write, with the reason in words."""
    answers = gateway.explain_email(person)
    return [{"kind": kind, "label": label, "allowed": answers[kind]["allowed"],
             "reason": answers[kind]["reason"],
             "text": gateway.REASON_TEXT.get(answers[kind]["reason"])}
            for kind, label in ((gateway.Kind.ADHOC, _("A new email (ad-hoc)")),
                                (gateway.Kind.REPLY, _("A reply to a message they sent")))]


def compose_view(model_admin, request, object_id):
    if not request.user.has_perm(MAY_EMAIL):
        return HttpResponse(status=403)
    person = _person_or_404(model_admin, request, object_id)
    inbound = list(InboundMessage.objects.filter(person=person).order_by("-received_at")[:50])
    template = request.GET.get("template") or "blank"
    if template not in STAFF_TEMPLATES:
        template = "blank"
    if request.method == "POST":
        form = ComposeForm(request.POST, inbound=inbound)
        if form.is_valid():
            try:
                message = email_compose(person=person, user=request.user, **form.cleaned_data)
            except NotAllowed as refused:
                form.add_error(None, _("Not sent: %(why)s (%(reason)s).") % {
                    "why": gateway.REASON_TEXT.get(refused.reason, refused.reason),
                    "reason": refused.reason})
            except ServiceError as error:
                form.add_error(error.field if error.field in form.fields else None,
                               error.message)
            else:
                model_admin.message_user(request, _("Email queued (%(kind)s): it is sent once "
                                                    "the gateway says yes again, right before "
                                                    "it goes.") % {"kind": message.kind})
                return HttpResponseRedirect(_change_url(model_admin, person))
    else:
        # The picker is a GET parameter: choosing a template reloads the form, filled in.
        start = staff_template_render(name=template, person=person, user=request.user)
        replying = request.GET.get("in_reply_to", "")
        answered = next((m for m in inbound if m.message_id == replying), None)
        subject = start.subject
        if answered is not None and not subject:
            subject = answered.subject if answered.subject.lower().startswith("re:") else (
                f"Re: {answered.subject}".strip())
        form = ComposeForm(inbound=inbound, initial={
            "subject": subject, "body": start.text.rstrip("\n"),
            "in_reply_to": answered.message_id if answered else ""})
    return render(request, "admin/campaigns/compose.html", _context(
        model_admin, request, person, _("Send an email"), form=form, decisions=_decisions(person),
        templates=list(STAFF_TEMPLATES.items()), template=template, inbound=inbound))


def record_inbound_view(model_admin, request, object_id):
    if not request.user.has_perm(MAY_EMAIL):
        return HttpResponse(status=403)
    person = _person_or_404(model_admin, request, object_id)
    form = InboundForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            inbound_record(person=person, user=request.user, **form.cleaned_data)
        except ServiceError as error:
            form.add_error(error.field if error.field in form.fields else None, error.message)
        else:
            model_admin.message_user(request, _("Received email recorded."))
            return HttpResponseRedirect(_change_url(model_admin, person))
    return render(request, "admin/campaigns/record_inbound.html", _context(
        model_admin, request, person, _("Record a received email"), form=form))


class ConversationFormSet(BaseInlineFormSet):
    """No forms, only the `conversation` list. A save of the person page posted without this
    block's management form (a client that predates the block) is not refused for it."""

    def __init__(self, data=None, *args, prefix=None, **kwargs):
        key = f"{prefix or self.get_default_prefix()}-TOTAL_FORMS"
        if data is not None and key not in data:
            data = data.copy()
            data.update({key: "0", key.replace("TOTAL", "INITIAL"): "0"})
        super().__init__(data, *args, prefix=prefix, **kwargs)

    @cached_property
    def conversation(self):
        return conversation_recent(person=self.instance)


class PersonBlock(admin.TabularInline):
    """A read-only block on the person page, drawn by its own template from its formset (not
    a form: nothing to add, change or delete). Subclasses set model, formset, template and
    verbose_name_plural."""

    fields = ()
    extra = 0
    max_num = 0
    can_delete = False

    def has_view_permission(self, request, obj=None):
        # Shown on an existing person to whoever may see them.
        return obj is not None and request.user.has_perm("crm.view_person")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        return self.model.objects.none()  # the formset lists the block's rows instead


class ConversationInline(PersonBlock):
    """The recent conversation on the person page (conversation_recent())."""

    model = InboundMessage
    formset = ConversationFormSet
    template = "admin/campaigns/conversation_inline.html"
    verbose_name_plural = _("Conversation")


def compose_link(request, person):
    if not request.user.has_perm(MAY_EMAIL):
        return None
    return (_("Send email…"), reverse("admin:crm_person_send_email", args=[person.pk]))


def inbound_link(request, person):
    if not request.user.has_perm(MAY_EMAIL):
        return None
    return (_("Record a received email…"),
            reverse("admin:crm_person_record_inbound", args=[person.pk]))
