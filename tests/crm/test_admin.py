
import pytest
from django.contrib import admin as django_admin
from django.core import mail
from django.urls import reverse

from campaigns.models import DoubleOptInBatch, EmailMessage, MailboxMessage
from config import clock
from consents.models import ConsentEvent, ConsentSettings, PortalSettings
from crm.models import AuditEntry, Contact, FieldType, Lead, Person
from encryption.models import FieldAccessLog
from preferences_portal.models import InvitationRun
from tests.factories import (
    FieldDefinitionFactory,
    MailboxMessageFactory,
    MarketingListFactory,
    OrganisationFactory,
    PersonFactory,
    StaffUserFactory,
    import_people,
)

pytestmark = pytest.mark.django_db
# The Consents block's (read-only) inline formset posts its management form with every save.
CONSENTS_INLINE = {"consents-TOTAL_FORMS": "0", "consents-INITIAL_FORMS": "0"}


def admin_urls():
    for model, model_admin in django_admin.site._registry.items():
        info = (model._meta.app_label, model._meta.model_name)
        yield model, model_admin, info


def test_every_admin_list_and_form_renders_for_an_admin(admin_client_):
    PersonFactory(kind="contact")
    MailboxMessageFactory()
    OrganisationFactory()
    MarketingListFactory()
    read_only = {MailboxMessage, AuditEntry, FieldAccessLog, ConsentEvent, ConsentSettings,
                 EmailMessage, DoubleOptInBatch, PortalSettings, InvitationRun}
    for model, _model_admin, info in admin_urls():
        response = admin_client_.get(reverse("admin:{}_{}_changelist".format(*info)),
                                     follow=True)
        assert response.status_code == 200, info
        add = admin_client_.get(reverse("admin:{}_{}_add".format(*info)))
        assert add.status_code == (403 if model in read_only else 200), info
        obj = model._default_manager.first()
        if obj is not None:
            url = reverse("admin:{}_{}_change".format(*info), args=[obj.pk])
            assert admin_client_.get(url).status_code == 200, info


def test_people_lists_of_300_render_in_bounded_queries(staff_client, django_assert_max_num_queries):
    owners = StaffUserFactory.create_batch(3)
    for i in range(300):
        PersonFactory(kind="lead" if i % 2 else "contact", owner=owners[i % 3])
    for url_name in ("admin:crm_lead_changelist", "admin:crm_contact_changelist",
                     "admin:crm_person_changelist"):
        with django_assert_max_num_queries(15):
            response = staff_client.get(reverse(url_name), {"o": "-9"})
        assert response.status_code == 200
        assert len(response.context["cl"].result_list) == 50


def test_people_list_searches_and_filters(staff_client):
    PersonFactory(kind="contact", last_name="Quixote", region="EU")
    PersonFactory(kind="contact", last_name="Panza", region="UK")
    url = reverse("admin:crm_contact_changelist")
    assert b"Quixote" in staff_client.get(url, {"q": "quixote"}).content
    assert b"Panza" not in staff_client.get(url, {"q": "quixote"}).content
    filtered = staff_client.get(url, {"region__exact": "UK"}).content
    assert b"Panza" in filtered and b"Quixote" not in filtered
    for params in ({"processing_stopped": "yes"}, {"erasure_requested": "no"},
                   {"owner": "me"}, {"owner": "none"}, {"email_opt_in__exact": "none"}):
        assert staff_client.get(url, params).status_code == 200


@pytest.mark.parametrize("url_name", [
    "admin:crm_fielddefinition_changelist", "admin:crm_fielddefinition_add",
    "admin:auth_group_changelist", "admin:auth_user_changelist",
])
def test_staff_cannot_reach_settings_pages(staff_client, url_name):
    assert staff_client.get(reverse(url_name)).status_code == 403


def test_admin_reaches_settings_pages(admin_client_):
    assert admin_client_.get(reverse("admin:crm_fielddefinition_changelist")).status_code == 200


def test_custom_fields_are_real_form_fields_and_save_through_the_service(staff_client, staff_user):
    FieldDefinitionFactory(key="tier", label="Tier", field_type=FieldType.CHOICE,
                           choices=["gold", "silver"])
    FieldDefinitionFactory(key="renewal", label="Renewal", field_type=FieldType.DATE)
    FieldDefinitionFactory(key="seats", label="Seats", field_type=FieldType.NUMBER)
    FieldDefinitionFactory(key="vip", label="VIP", field_type=FieldType.BOOLEAN)
    person = PersonFactory(kind="contact", custom={"tier": "gold"})
    url = reverse("admin:crm_contact_change", args=[person.pk])
    page = staff_client.get(url).content.decode()
    assert 'name="custom__tier"' in page and '<option value="gold" selected>' in page
    assert 'type="date"' in page and 'name="custom__seats"' in page
    form = {
        "first_name": person.first_name, "last_name": person.last_name, "email": person.email,
        "phone": "", "language": "", "company": person.company, "organisation": "",
        "country": "IT", "region": "EU", "stage": "qualified", "owner": staff_user.pk,
        "custom__tier": "silver", "custom__renewal": "2027-01-31", "custom__seats": "25",
        "custom__vip": "true", "_save": "Save", **CONSENTS_INLINE,
    }
    response = staff_client.post(url, form)
    assert response.status_code == 302, response.context["adminform"].form.errors
    person.refresh_from_db()
    assert person.custom == {"tier": "silver", "renewal": "2027-01-31", "seats": 25, "vip": True}
    assert person.stage == "qualified"
    entry = AuditEntry.objects.filter(person_id=person.pk, action="update").get()
    assert set(entry.fields) >= {"tier", "renewal", "seats", "vip", "stage", "owner"}
    assert entry.source == "staff" and entry.actor == staff_user


def test_bad_custom_value_is_shown_next_to_its_field(staff_client):
    FieldDefinitionFactory(key="tier", label="Tier", field_type=FieldType.CHOICE,
                           choices=["gold"])
    url = reverse("admin:crm_lead_add")
    response = staff_client.post(url, {"kind": "lead", "email": "taken@example.org",
                                       "stage": "new", "email_opt_in": "none",
                                       "custom__tier": "platinum"})
    assert response.status_code == 200
    assert "custom__tier" in response.context["adminform"].form.errors
    PersonFactory(email="taken@example.org")
    response = staff_client.post(url, {"kind": "lead", "email": "TAKEN@example.org",
                                       "stage": "new", "email_opt_in": "none"})
    assert "email" in response.context["adminform"].form.errors
    assert Person.objects.count() == 1


def test_staff_adds_a_lead_from_the_ui(staff_client, staff_user):
    response = staff_client.post(reverse("admin:crm_lead_add"), {
        "kind": "lead", "first_name": "Lin", "email": "lin@example.org", "stage": "new",
        "email_opt_in": "single_opt_in_user", "owner": staff_user.pk, "_save": "Save",
    })
    assert response.status_code == 302
    person = Lead.objects.get(email="lin@example.org")
    assert person.email_opt_in == "single_opt_in_user"
    assert AuditEntry.objects.get(person_id=person.pk).action == "create"


def test_add_form_offers_only_the_opt_in_states_staff_may_set(staff_client):
    form = staff_client.get(reverse("admin:crm_lead_add")).context["adminform"].form
    assert [v for v, _ in form.fields["email_opt_in"].choices] == ["none", "single_opt_in_user"]


def test_stopped_record_is_read_only_with_a_banner(staff_client):
    person = PersonFactory(kind="contact")
    Person.objects.filter(pk=person.pk).update(processing_stopped_at=clock.now())
    url = reverse("admin:crm_contact_change", args=[person.pk])
    page = staff_client.get(url)
    assert page.status_code == 200
    assert b"Processing stopped" in page.content
    assert b'name="_save"' not in page.content
    assert staff_client.post(url, {"first_name": "X"}).status_code == 403


def test_convert_action(staff_client):
    leads = PersonFactory.create_batch(2, kind="lead")
    response = staff_client.post(reverse("admin:crm_lead_changelist"), {
        "action": "convert_to_contact", "_selected_action": [str(p.pk) for p in leads],
    })
    assert response.status_code == 302
    assert Contact.objects.filter(pk__in=[p.pk for p in leads]).count() == 2


def test_assign_owner_action_asks_then_applies(staff_client):
    people = PersonFactory.create_batch(2, kind="lead")
    owner = StaffUserFactory(username="olga")
    url = reverse("admin:crm_lead_changelist")
    selected = [str(p.pk) for p in people]
    ask = staff_client.post(url, {"action": "assign_owner", "_selected_action": selected})
    assert ask.status_code == 200 and b"New owner" in ask.content
    done = staff_client.post(url, {"action": "assign_owner", "_selected_action": selected,
                                   "owner": owner.pk, "apply": "1"})
    assert done.status_code == 302
    assert Person.objects.filter(owner=owner).count() == 2


def test_add_to_marketing_list_action(staff_client):
    people = PersonFactory.create_batch(3, kind="contact")
    mlist = MarketingListFactory(name="Newsletter")
    staff_client.post(reverse("admin:crm_contact_changelist"), {
        "action": "add_to_marketing_list", "_selected_action": [str(p.pk) for p in people],
        "marketing_list": mlist.pk, "apply": "1",
    })
    assert mlist.members.count() == 3


def test_encryption_cannot_be_switched_off_from_settings(admin_client_):
    definition = FieldDefinitionFactory(key="tax_code", is_encrypted=True)
    url = reverse("admin:crm_fielddefinition_change", args=[definition.pk])
    response = admin_client_.post(url, {
        "label": "Tax code", "field_type": "text", "choices": "[]", "position": 100,
        "active": "on", "is_pii": "on", "mask_rule": "", "help_text": "",
    })
    assert response.status_code == 200
    assert "is_encrypted" in response.context["adminform"].form.errors
    definition.refresh_from_db()
    assert definition.is_encrypted


def test_mailbox_lists_messages_sent_in_development(staff_client, settings):
    mail.EmailMessage("Welcome", "Visit http://127.0.0.1:8000/x", to=["a@example.org"],
                      connection=mail.get_connection("campaigns.mailbox.MailboxBackend")).send()
    listing = staff_client.get(reverse("admin:campaigns_mailboxmessage_changelist"))
    assert b"Welcome" in listing.content
    message = MailboxMessage.objects.get()
    page = staff_client.get(reverse("admin:campaigns_mailboxmessage_change", args=[message.pk]))
    assert b'href="http://127.0.0.1:8000/x"' in page.content


def test_organisation_and_list_pages_save(staff_client):
    response = staff_client.post(reverse("admin:crm_organisation_add"),
                                 {"name": "Acme", "country": "IT", "website": ""})
    assert response.status_code == 302
    OrganisationFactory(name="Other")
    response = staff_client.post(reverse("admin:crm_marketinglist_add"),
                                 {"name": "VIPs", "description": "",
                                  "listmembership_set-TOTAL_FORMS": 0,
                                  "listmembership_set-INITIAL_FORMS": 0})
    assert response.status_code in (200, 302)


def test_staff_replaces_a_sensitive_value_and_blank_keeps_it(staff_client, staff_user):
    person = PersonFactory(kind="contact", card_number="4111111111111111")
    url = reverse("admin:crm_contact_change", args=[person.pk])
    page = staff_client.get(url).content.decode()
    assert "Stored: ••••••••••••1111" in page and "4111111111111111" not in page
    form = {
        "first_name": person.first_name, "last_name": person.last_name, "email": person.email,
        "phone": "", "language": "", "company": person.company, "organisation": "",
        "country": "IT", "region": "EU", "stage": "new", "owner": "",
        "national_id": "", "card_number": "", "_save": "Save", **CONSENTS_INLINE,
    }
    assert staff_client.post(url, form).status_code == 302
    assert Person.objects.get(pk=person.pk).card_number_mask == "••••••••••••1111"
    assert staff_client.post(url, {**form, "card_number": "5555 5555 5555 4444"}).status_code == 302
    assert Person.objects.get(pk=person.pk).card_number_mask == "••••••••••••4444"


def test_people_list_counts_at_most_the_cap(staff_client, monkeypatch):
    from crm.paginator import CappedCountPaginator

    monkeypatch.setattr(CappedCountPaginator, "cap", 5)
    PersonFactory.create_batch(7, kind="contact")
    page = staff_client.get(reverse("admin:crm_contact_changelist")).content.decode()
    assert "more than 5 contacts" in page
    filtered = staff_client.get(reverse("admin:crm_contact_changelist"), {"q": "example"})
    assert "more than 5 results" in filtered.content.decode()
    PersonFactory.create_batch(1, kind="lead")
    assert "1 lead" in staff_client.get(reverse("admin:crm_lead_changelist")).content.decode()


def test_the_person_page_history_shows_the_import_that_created_them(admin_client_, admin_user_):
    import_people("first_name,email\nAda,ada@example.org\n", user=admin_user_,
                  file_name="fair.csv")
    person = Person.objects.get(email="ada@example.org")

    page = admin_client_.get(reverse("admin:crm_person_change", args=[person.pk]))

    assert page.status_code == 200
    history = page.content.decode().split('<table class="audit">')[1].split("</table>")[0]
    assert "import: fair.csv" in history and "ada.admin" in history
    assert "email, first_name" in history and "Ada" not in history
