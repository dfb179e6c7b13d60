from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import Permission
from django.core import mail

from campaigns.conversations import email_compose, inbound_record
from campaigns.models import EmailMessage, InboundMessage
from campaigns.optin import Actor, opt_in_change
from config import clock
from consents.models import Verification
from crm.models import Person
from tests.factories import PersonFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_staff_ui_offers_only_allowed_moves_and_applies_them(staff_client):
    person = PersonFactory(email_opt_in="single_opt_in_user")
    url = f"/admin/crm/person/{person.pk}/email-opt-in/"
    assert b"Email opt-in" in staff_client.get(f"/admin/crm/person/{person.pk}/change/").content
    page = staff_client.get(url).content.decode()
    assert 'value="opt_out_user"' in page and "double_opt_in" not in page.split("<form")[1]
    staff_client.post(url, {"move": "opt_out_user", "note": "Asked by phone"})
    assert Person.objects.get(pk=person.pk).email_opt_in == "opt_out_user"
    staff_client.post(url, {"move": "reverse_opt_out", "note": "Mistake"})
    assert Person.objects.get(pk=person.pk).email_opt_in == "single_opt_in_user"


def test_staff_ui_explains_why_a_contacts_own_opt_out_cannot_be_reversed(staff_client):
    person = PersonFactory()
    opt_in_change(person=person, actor=Actor.CONTACT, verified_by=Verification.NONE)
    url = f"/admin/crm/person/{person.pk}/email-opt-in/"
    page = staff_client.get(url).content.decode()
    assert "Staff cannot reverse" in page and 'name="move"' not in page
    staff_client.post(url, {"move": "reverse_opt_out", "note": "x"})
    assert Person.objects.get(pk=person.pk).email_opt_in == "opt_out_contact"


def test_send_double_opt_in_action_counts_by_reason(staff_client):
    ok = PersonFactory()
    out = PersonFactory()
    opt_in_change(person=out, actor=Actor.CONTACT, verified_by=Verification.NONE)
    response = staff_client.post("/admin/crm/person/", {
        "action": "send_double_opt_in", "_selected_action": [str(ok.pk), str(out.pk)],
    }, follow=True)
    text = response.content.decode()
    assert "opted_out_contact 1" in text and "sent 1" in text


# --- compose and record from the person page (issue 5, item 6) ----------------------------------

def _compose_url(person):
    return f"/admin/crm/person/{person.pk}/send-email/"


def _inbound_url(person):
    return f"/admin/crm/person/{person.pk}/record-inbound/"


def _opted_out_by_contact():
    person = PersonFactory()
    opt_in_change(person=person, actor=Actor.CONTACT, verified_by=Verification.NONE)
    return person


def test_person_page_links_to_compose_and_record_pages(staff_client):
    person = PersonFactory()
    page = staff_client.get(f"/admin/crm/person/{person.pk}/change/").content.decode()
    assert _compose_url(person) in page and _inbound_url(person) in page
    assert "Send email…" in page and "Record a received email…" in page


def test_compose_page_shows_the_gateways_decision_and_why(staff_client):
    person = _opted_out_by_contact()
    page = staff_client.get(_compose_url(person)).content.decode()
    adhoc = page.split('class="decision decision-adhoc"')[1].split("</tr>")[0]
    reply = page.split('class="decision decision-reply"')[1].split("</tr>")[0]
    assert ">no<" in adhoc and "opted_out_contact" in adhoc and "opted out themselves" in adhoc
    assert ">yes<" in reply and "eligible" in reply


def test_template_picker_prefills_subject_and_body_with_escaped_merge_fields(staff_client):
    person = PersonFactory(first_name="<b>Zoë</b>", company="Acme & Co")
    page = staff_client.get(_compose_url(person) + "?template=meeting_request").content.decode()
    assert "Meeting request: Acme &amp; Co" in page
    assert "Hello &lt;b&gt;Zoë&lt;/b&gt;," in page and "<b>Zoë</b>" not in page
    blank = staff_client.get(_compose_url(person) + "?template=nonsense").content.decode()
    assert 'value="blank" selected' in blank  # an unknown name falls back to the blank start


@pytest.mark.parametrize("name", ["blank", "follow_up", "meeting_request"])
def test_every_staff_template_renders_for_a_person_without_names(name):
    from campaigns.conversations import staff_template_render

    rendered = staff_template_render(name=name, person=PersonFactory(first_name="", company=""))
    assert rendered.text.startswith("Hello,")


def test_composing_on_the_page_sends_through_the_outbox(
    staff_client, django_capture_on_commit_callbacks
):
    person = PersonFactory(first_name="Ada")
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(_compose_url(person), {
            "subject": "Your quote", "body": "Hello Ada,\nsee https://example.org/q <ok>"})
    assert response.status_code == 302
    assert response["Location"] == f"/admin/crm/person/{person.pk}/change/"
    row = EmailMessage.objects.get(person=person)
    assert (row.kind, row.status, row.template) == ("adhoc", "sent", "adhoc")
    sent = mail.outbox[-1]
    assert sent.to == [person.email] and sent.subject == "Your quote"
    html = sent.alternatives[0][0]
    assert "&lt;ok&gt;" in html and '<a href="https://example.org/q"' in html
    page = staff_client.get(f"/admin/crm/person/{person.pk}/change/").content.decode()
    assert "Your quote" in page.split("conversation-block")[1]


def test_adhoc_email_to_an_opted_out_contact_is_refused_with_the_reason(staff_client):
    person = _opted_out_by_contact()
    response = staff_client.post(_compose_url(person), {"subject": "Offer", "body": "Buy"})
    assert response.status_code == 200
    page = response.content.decode()
    assert "Not sent: they opted out themselves (opted_out_contact)." in page
    assert not EmailMessage.objects.filter(person=person).exists()


def test_reply_to_a_recorded_inbound_message_goes_to_an_opted_out_contact(
    staff_client, django_capture_on_commit_callbacks
):
    person = _opted_out_by_contact()
    recorded = staff_client.post(_inbound_url(person), {
        "subject": "Where is my order?", "body": "It has not arrived.",
        "received_at": "2026-03-01T09:30", "message_id": "<order-q@customer.example>"})
    assert recorded.status_code == 302
    page = staff_client.get(_compose_url(person) + "?in_reply_to=%3Corder-q%40customer.example%3E")
    assert 'value="Re: Where is my order?"' in page.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(_compose_url(person), {
            "subject": "Re: Where is my order?", "body": "It ships today.",
            "in_reply_to": "<order-q@customer.example>"})
    assert response.status_code == 302
    row = EmailMessage.objects.get(person=person)
    assert (row.kind, row.status, row.in_reply_to) == (
        "reply", "sent", "<order-q@customer.example>")
    assert mail.outbox[-1].extra_headers["In-Reply-To"] == "<order-q@customer.example>"


def test_in_reply_to_must_be_one_of_the_persons_own_messages(staff_client):
    person, other = _opted_out_by_contact(), PersonFactory()
    inbound_record(person=other, message_id="<theirs@o.example>", subject="Hi", body=".")
    response = staff_client.post(_compose_url(person), {
        "subject": "Re: Hi", "body": "Sneaky", "in_reply_to": "<theirs@o.example>"})
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
    assert not EmailMessage.objects.exists()


def test_recording_a_received_email_lists_it_in_the_conversation_newest_first(
    staff_client, staff_user
):
    person = PersonFactory()
    with clock.frozen(datetime(2026, 3, 1, 10, tzinfo=UTC)):  # no "received at": now
        staff_client.post(_inbound_url(person), {"subject": "First question", "body": "?"})
    staff_client.post(_inbound_url(person), {"subject": "Older question", "body": "?",
                                            "received_at": "2026-02-01T08:00"})
    email_compose(person=person, subject="Our answer", body="!", user=staff_user)
    staff_client.post(_inbound_url(person), {"subject": "Second question", "body": "??"})
    first = InboundMessage.objects.get(subject="First question")
    assert first.message_id.startswith("<recorded-") and first.recorded_by == staff_user
    assert first.received_at == datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert InboundMessage.objects.get(subject="Older question").received_at.date().month == 2
    block = staff_client.get(f"/admin/crm/person/{person.pk}/change/").content.decode().split(
        "conversation-block")[1]
    positions = [block.index(s) for s in ("Second question", "Our answer", "First question",
                                          "Older question")]
    assert positions == sorted(positions)
    assert f"{_compose_url(person)}?in_reply_to=%3Crecorded-" in block


def test_recording_the_same_message_id_twice_is_a_form_error_not_a_500(staff_client):
    person = PersonFactory()
    data = {"subject": "Hi", "body": ".", "message_id": "<once@customer.example>"}
    assert staff_client.post(_inbound_url(person), data).status_code == 302
    again = staff_client.post(_inbound_url(person), data)
    assert again.status_code == 200 and "already recorded" in again.content.decode()
    assert InboundMessage.objects.filter(person=person).count() == 1


@pytest.mark.parametrize("data, field", [
    ({"subject": "", "body": "Hello"}, "subject"),
    ({"subject": "Hello", "body": ""}, "body"),
    ({"subject": "   ", "body": "   "}, "body"),
])
def test_bad_compose_input_shows_form_errors(staff_client, data, field):
    person = PersonFactory()
    response = staff_client.post(_compose_url(person), data)
    assert response.status_code == 200
    assert 'class="errorlist' in response.content.decode()
    assert not EmailMessage.objects.exists()


@pytest.mark.parametrize("data", [
    {"subject": "", "body": ""},
    {"subject": "Hi", "received_at": "yesterday-ish"},
])
def test_bad_inbound_input_shows_form_errors(staff_client, data):
    response = staff_client.post(_inbound_url(PersonFactory()), data)
    page = response.content.decode()
    assert response.status_code == 200
    assert 'class="errorlist' in page or 'role="alert"' in page
    assert not InboundMessage.objects.exists()


def test_pages_refuse_a_user_without_change_person(client):
    person = PersonFactory()
    viewer = UserFactory(username="vera.viewer")
    viewer.user_permissions.add(Permission.objects.get(codename="view_person"))
    client.force_login(viewer)
    assert "Send email…" not in client.get(
        f"/admin/crm/person/{person.pk}/change/").content.decode()
    for url in (_compose_url(person), _inbound_url(person)):
        assert client.get(url).status_code == 403
        assert client.post(url, {"subject": "Hi", "body": "x"}).status_code == 403
    assert not EmailMessage.objects.exists() and not InboundMessage.objects.exists()


def test_unknown_or_malformed_person_id_is_404(staff_client):
    assert staff_client.get("/admin/crm/person/not-a-uuid/send-email/").status_code == 404
    assert staff_client.get(
        "/admin/crm/person/00000000-0000-0000-0000-000000000000/record-inbound/"
    ).status_code == 404


def test_a_message_quoting_html_is_sent_escaped_not_refused(staff_client):
    person = PersonFactory()
    response = staff_client.post(_compose_url(person), {
        "subject": "Snippet", "body": 'Paste <a href="/signup">this</a> on your site.'})
    assert response.status_code == 302
    html = EmailMessage.objects.get(person=person).body_html
    assert "&lt;a href=&quot;/signup&quot;&gt;this&lt;/a&gt;" in html


def test_saving_the_person_page_does_not_need_the_conversation_blocks_form(staff_client):
    person = PersonFactory(kind="contact")
    url = f"/admin/crm/contact/{person.pk}/change/"
    assert 'name="inbound_messages-TOTAL_FORMS"' in staff_client.get(url).content.decode()
    response = staff_client.post(url, {
        "first_name": "Renamed", "last_name": person.last_name, "email": person.email,
        "phone": "", "language": "", "company": person.company, "organisation": "",
        "country": "IT", "region": "EU", "stage": "new", "owner": "", "_save": "Save",
        "consents-TOTAL_FORMS": "0", "consents-INITIAL_FORMS": "0"})
    assert response.status_code == 302
    assert Person.objects.get(pk=person.pk).first_name == "Renamed"


def test_the_api_refuses_a_message_id_recorded_twice_with_400(staff_api):
    person = PersonFactory()
    url = f"/api/persons/{person.pk}/inbound/"
    data = {"message_id": "<dup@customer.example>", "subject": "Hi", "body": "."}
    assert staff_api.post(url, data, format="json").status_code == 201
    again = staff_api.post(url, data, format="json")
    assert again.status_code == 400 and "message_id" in again.json()
