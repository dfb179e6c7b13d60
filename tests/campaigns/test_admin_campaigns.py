"""The staff campaign pages (issue 7): the dry run by the gateway's reasons with a link to the
people behind each count, the buttons that send, pause, resume and cancel (POST only), the form's
errors, the preview, and who may do what."""

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission

from campaigns.campaign_send import campaign_save, campaign_send
from campaigns.models import Campaign, EmailMessage
from campaigns.models import CampaignStatus as C
from campaigns.models import MessageStatus as S
from campaigns.optin import Actor, opt_in_change
from config import clock
from consents.models import Segment, Verification
from crm import rights
from crm import services as crm_services
from tests.factories import MarketingListFactory, PersonFactory, UserFactory

pytestmark = pytest.mark.django_db

BODY_HTML = "<p>Hello {{ first_name }}, spring is here.</p>"


def _confirmed(**kwargs):
    person = PersonFactory(**kwargs)
    return opt_in_change(person=person, actor=Actor.DOUBLE_OPT_IN,
                         verified_by=Verification.EMAIL_CONFIRMATION)


@pytest.fixture
def people(staff_user):
    """Everyone on the newsletter, by the reason the gateway gives for them."""
    by_reason = {
        "eligible": [_confirmed(first_name=n, email=f"{n.lower()}@example.org")
                     for n in ("Ada", "Ben", "Cai")],
        "opt_in_below_accepted": [PersonFactory(email_opt_in="single_opt_in_user")],
        "opted_out_contact": [_confirmed(), _confirmed()],
        "opted_out_user": [_confirmed()],
        "processing_stopped": [_confirmed()],
    }
    for person in by_reason["opted_out_contact"]:
        opt_in_change(person=person, actor=Actor.CONTACT, verified_by=Verification.NONE)
    opt_in_change(person=by_reason["opted_out_user"][0], actor=Actor.STAFF,
                  wanted="opt_out_user", user=staff_user, note="Asked by phone",
                  verified_by=Verification.STAFF_USER)
    newsletter = MarketingListFactory(name="Newsletter")
    crm_services.marketing_list_add(marketing_list=newsletter, source="staff", person_ids=[
        p.pk for group in by_reason.values() for p in group])
    rights.processing_stop(person=by_reason["processing_stopped"][0], source="portal")
    PersonFactory(email="outsider@example.org")  # on no list: never counted
    return newsletter, by_reason


@pytest.fixture
def campaign(people):
    newsletter, _ = people
    return campaign_save(campaign=Campaign(name="Spring", subject="Spring, {{ first_name }}",
                                           body_html=BODY_HTML, body_text="Hello {{ first_name }}"),
                         lists=[newsletter])


def _change_url(campaign):
    return f"/admin/campaigns/campaign/{campaign.pk}/change/"


def _run_url(campaign, action):
    return f"/admin/campaigns/campaign/{campaign.pk}/run/{action}/"


def _dry_run_rows(html: str) -> dict:
    panel = html.split('class="module campaign-panel dry-run"')[1].split("</fieldset>")[0]
    rows = re.findall(r'<tr class="reason-([a-z_]+)[^"]*">(.*?)</tr>', panel, re.S)
    return {reason: int(re.findall(r">(\d+)<", row)[-1]) for reason, row in rows}


def _fresh(campaign):
    return Campaign.objects.get(pk=campaign.pk)


# -- the dry run --------------------------------------------------------------------------------

def test_dry_run_panel_counts_every_reason_with_its_words(staff_client, campaign):
    html = staff_client.get(_change_url(campaign)).content.decode()
    assert _dry_run_rows(html) == {
        "erased": 0, "no_valid_address": 0, "suppressed": 0, "processing_stopped": 1,
        "opted_out_contact": 2, "opted_out_user": 1, "opt_in_below_accepted": 1, "eligible": 3}
    assert "They opted out themselves <code>opted_out_contact</code>" in html
    assert '<th class="count dry-run-total">8</th>' in html


def test_dry_run_counts_follow_the_acceptance_setting(staff_client, campaign):
    from consents.services import settings_update

    settings_update(opt_in_accepted="double+user")
    rows = _dry_run_rows(staff_client.get(_change_url(campaign)).content.decode())
    assert (rows["eligible"], rows["opt_in_below_accepted"]) == (4, 0)


@pytest.mark.parametrize("reason", ["eligible", "opted_out_contact", "opted_out_user",
                                    "processing_stopped", "opt_in_below_accepted"])
def test_each_count_links_to_exactly_the_people_behind_it(staff_client, campaign, people, reason):
    html = staff_client.get(_change_url(campaign)).content.decode()
    link = f"/admin/crm/person/?campaign_audience={campaign.pk}%3A{reason}"
    assert f'href="{link}"' in html
    listed = staff_client.get(link)
    assert listed.status_code == 200
    shown = {str(p.pk) for p in listed.context["cl"].result_list}
    assert shown == {str(p.pk) for p in people[1][reason]}


@pytest.mark.parametrize("value", ["999999:eligible", "{id}:nonsense", "abc", "{id}"])
def test_audience_filter_with_a_bad_value_lists_nobody(staff_client, campaign, value):
    listed = staff_client.get("/admin/crm/person/",
                              {"campaign_audience": value.format(id=campaign.pk)})
    assert listed.status_code == 200
    assert list(listed.context["cl"].result_list) == []


def test_a_count_of_zero_is_not_a_link(staff_client, campaign):
    html = staff_client.get(_change_url(campaign)).content.decode()
    assert f"campaign_audience={campaign.pk}%3Aerased" not in html


# -- the buttons ----------------------------------------------------------------------------------

def test_send_now_sends_to_the_eligible_and_shows_progress_and_stats(
    staff_client, campaign, mailoutbox, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):  # start, fan out, send: inline
        response = staff_client.post(_run_url(campaign, "send"), follow=True)
    assert response.redirect_chain[-1][0] == _change_url(campaign)
    campaign = _fresh(campaign)
    assert campaign.status == C.SENT  # tasks run inline in tests
    assert sorted(m.to[0] for m in mailoutbox) == [
        "ada@example.org", "ben@example.org", "cai@example.org"]
    assert "Sending: the audience is being written" in response.content.decode()
    html = staff_client.get(_change_url(campaign)).content.decode()
    assert '<strong class="progress-value">100.0%</strong>' in html
    assert '<dd class="stat-sent">3</dd>' in html
    assert 'http-equiv="refresh"' not in html  # only while sending
    excluded = html.split('class="excluded-by-reason"')[1].split("</table>")[0]
    assert "opted_out_contact" in excluded and "processing_stopped" in excluded
    assert "dry-run" not in html.split("<form")[0]  # the dry run gives way to the stats


def test_sending_campaign_page_refreshes_itself_and_offers_pause_and_cancel(
    staff_client, campaign, django_capture_on_commit_callbacks
):
    # Captured, not run: the campaign stays "sending" with its start task not yet run.
    with django_capture_on_commit_callbacks(execute=False):
        campaign_send(campaign=campaign)
    html = staff_client.get(_change_url(campaign)).content.decode()
    assert '<meta http-equiv="refresh" content="5">' in html
    assert _run_url(campaign, "pause") in html and _run_url(campaign, "cancel") in html
    assert _run_url(campaign, "send") not in html
    assert 'name="_save"' not in html  # read-only once it is sending


def test_pause_resume_and_cancel_move_the_campaign_and_its_messages(
    staff_client, campaign, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        campaign_send(campaign=campaign)
    from campaigns.campaign_send import fan_out, materialise

    assert materialise(campaign.pk) == 3
    assert fan_out(campaign.pk) == 3
    staff_client.post(_run_url(campaign, "pause"))
    assert _fresh(campaign).status == C.PAUSED
    assert set(EmailMessage.objects.filter(campaign_id=campaign.pk)
               .values_list("status", flat=True)) == {S.HELD}
    html = staff_client.get(_change_url(campaign)).content.decode()
    assert '<dd class="stat-held">3</dd>' in html and 'http-equiv="refresh"' not in html
    assert _run_url(campaign, "resume") in html and _run_url(campaign, "pause") not in html

    with django_capture_on_commit_callbacks(execute=False):
        staff_client.post(_run_url(campaign, "resume"))
    assert _fresh(campaign).status == C.SENDING
    staff_client.post(_run_url(campaign, "cancel"))
    assert _fresh(campaign).status == C.CANCELLED
    assert set(EmailMessage.objects.filter(campaign_id=campaign.pk)
               .values_list("reason", flat=True)) == {"campaign_cancelled"}


@pytest.mark.parametrize("action", ["send", "schedule", "pause", "resume", "cancel"])
def test_get_on_a_button_url_changes_nothing(staff_client, campaign, action):
    response = staff_client.get(_run_url(campaign, action))
    assert response.status_code == 405
    campaign = _fresh(campaign)
    assert (campaign.status, campaign.started_at) == (C.DRAFT, None)
    assert not EmailMessage.objects.filter(campaign_id=campaign.pk).exists()


def test_schedule_sets_the_time_and_refuses_a_past_one(staff_client, campaign):
    past = (clock.now() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    response = staff_client.post(_run_url(campaign, "schedule"), {"at": past}, follow=True)
    assert "Choose a time in the future." in response.content.decode()
    assert _fresh(campaign).status == C.DRAFT

    later = (clock.now() + timedelta(days=1)).replace(second=0, microsecond=0)
    staff_client.post(_run_url(campaign, "schedule"), {"at": later.strftime("%Y-%m-%dT%H:%M")})
    campaign = _fresh(campaign)
    assert (campaign.status, campaign.scheduled_at) == (C.SCHEDULED, later)
    assert not EmailMessage.objects.filter(campaign_id=campaign.pk).exists()


def test_a_button_the_status_does_not_allow_shows_the_services_refusal(staff_client, campaign):
    response = staff_client.post(_run_url(campaign, "resume"), follow=True)
    assert "A campaign that is draft cannot be resumed." in response.content.decode()
    assert _fresh(campaign).status == C.DRAFT


def test_sending_without_an_audience_is_refused_with_the_reason(staff_client):
    empty = campaign_save(campaign=Campaign(name="Empty", subject="Hi", body_html="<p>Hi</p>",
                                            body_text="Hi"))
    response = staff_client.post(_run_url(empty, "send"), follow=True)
    assert "Choose at least one list or a segment rule." in response.content.decode()
    assert _fresh(empty).status == C.DRAFT


# -- the form -------------------------------------------------------------------------------------

def _form_data(**changes):
    data = {"name": "Autumn", "subject": "Autumn news", "body_html": "<p>Hi {{ first_name }}</p>",
            "body_text": "Hi {{ first_name }}", "segment_rule": "", "copy_segment": ""}
    data.update(changes)
    return data


def test_add_form_saves_through_the_service_with_its_lists(staff_client, staff_user, people):
    newsletter, _ = people
    response = staff_client.post("/admin/campaigns/campaign/add/",
                                 _form_data(lists=[newsletter.pk]))
    assert response.status_code == 302
    campaign = Campaign.objects.get(name="Autumn")
    assert list(campaign.lists.all()) == [newsletter]
    assert campaign.created_by == staff_user


@pytest.mark.parametrize(("field", "value", "shown"), [
    ("body_text", "Hi {{ nickname }}", "Unknown merge field {{ nickname }}"),
    ("subject", "Hi {% if x %}", "Only merge fields like {{ first_name }} are allowed"),
    ("body_html", '<a href="/offer">offer</a>', "Links must be absolute"),
    ("segment_rule", '{"field": "country", "op": "sounds_like", "value": "IT"}', ""),
    ("segment_rule", "{not json", "Enter a valid JSON."),
])
def test_invalid_content_is_shown_as_a_form_error_and_nothing_is_saved(
    staff_client, field, value, shown
):
    response = staff_client.post("/admin/campaigns/campaign/add/", _form_data(**{field: value}))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert field in errors
    assert shown in " ".join(errors[field])
    assert not Campaign.objects.filter(name="Autumn").exists()


def test_choosing_a_segment_copies_its_rule(staff_client):
    segment = Segment.objects.create(name="Italians",
                                     rule={"field": "country", "op": "eq", "value": "IT"})
    staff_client.post("/admin/campaigns/campaign/add/",
                      _form_data(segment_rule="", copy_segment=segment.pk))
    assert Campaign.objects.get(name="Autumn").segment_rule == segment.rule


def test_a_sent_campaign_is_read_only_and_a_forced_save_shows_the_refusal(
    staff_client, campaign, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(_run_url(campaign, "send"))
    assert _fresh(campaign).status == C.SENT
    page = staff_client.get(_change_url(campaign)).content.decode()
    assert 'name="subject"' not in page and 'name="_save"' not in page
    response = staff_client.post(_change_url(campaign), _form_data(name="Renamed"), follow=True)
    assert "A campaign that is sent cannot be changed." in response.content.decode()
    assert _fresh(campaign).name == "Spring"


def test_a_campaign_that_started_cannot_be_deleted(admin_client_, campaign):
    assert admin_client_.get(f"/admin/campaigns/campaign/{campaign.pk}/delete/").status_code == 200
    admin_client_.post(_run_url(campaign, "send"))
    assert admin_client_.get(f"/admin/campaigns/campaign/{campaign.pk}/delete/").status_code == 403
    assert admin_client_.post(f"/admin/campaigns/campaign/{campaign.pk}/delete/",
                              {"post": "yes"}).status_code == 403
    assert Campaign.objects.filter(pk=campaign.pk).exists()


# -- the preview ----------------------------------------------------------------------------------

def test_preview_renders_the_first_eligible_person_in_a_sandboxed_frame(staff_client, campaign,
                                                                         people):
    html = staff_client.get(_change_url(campaign)).content.decode()
    first = min(people[1]["eligible"], key=lambda p: p.pk)
    assert f'<strong class="preview-subject">Spring, {first.first_name}</strong>' in html
    frame = re.search(r'<iframe class="preview-html" sandbox="" [^>]*srcdoc="([^"]*)"', html)
    assert frame and "&lt;p&gt;Hello " in frame.group(1)
    assert "Manage your email preferences or unsubscribe" in frame.group(1)


def test_preview_for_a_chosen_address_escapes_the_merge_values(staff_client, campaign, people):
    newsletter, _ = people
    person = _confirmed(first_name="<script>alert(1)</script>", email="mal@example.org")
    crm_services.marketing_list_add(marketing_list=newsletter, person_ids=[person.pk],
                                    source="staff")
    html = staff_client.get(_change_url(campaign), {"preview": "MAL@example.org"}).content.decode()
    assert "<script>alert(1)" not in html
    # Escaped by the mail renderer, then once more into the srcdoc attribute.
    assert "&amp;lt;script&amp;gt;alert(1)" in html
    assert "Nobody in this campaign" not in html


def test_preview_for_someone_outside_the_audience_says_so(staff_client, campaign):
    html = staff_client.get(_change_url(campaign),
                            {"preview": "outsider@example.org"}).content.decode()
    assert "Nobody in this campaign&#x27;s audience has that address or id." in html
    assert "preview-html" not in html


# -- permissions ----------------------------------------------------------------------------------

@pytest.fixture
def staff_without_campaigns(client):
    user = UserFactory(username="no.campaigns", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(
        content_type__app_label="crm", codename__in=["view_person", "change_person"]))
    client.force_login(user)
    return client


def test_staff_without_campaign_permissions_get_403(staff_without_campaigns, campaign):
    client = staff_without_campaigns
    assert client.get("/admin/campaigns/campaign/").status_code == 403
    assert client.get(_change_url(campaign)).status_code == 403
    for action in ("send", "pause", "cancel"):
        assert client.post(_run_url(campaign, action)).status_code == 403
    assert _fresh(campaign).status == C.DRAFT
    # The people behind a count are not revealed without the campaign permission either.
    listed = client.get("/admin/crm/person/",
                        {"campaign_audience": f"{campaign.pk}:eligible"})
    assert list(listed.context["cl"].result_list) == []


def test_staff_who_may_only_view_see_no_buttons_and_cannot_send(client, campaign):
    user = UserFactory(username="viewer", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_campaign"))
    client.force_login(user)
    html = client.get(_change_url(campaign)).content.decode()
    assert "dry-run" in html and _run_url(campaign, "send") not in html
    assert client.post(_run_url(campaign, "send")).status_code == 403
    assert _fresh(campaign).status == C.DRAFT


def test_campaign_list_shows_status_and_progress(staff_client, campaign,
                                                django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(_run_url(campaign, "send"))
    html = staff_client.get("/admin/campaigns/campaign/").content.decode()
    row = html.split(f"/admin/campaigns/campaign/{campaign.pk}/change/")[1].split("</tr>")[0]
    assert "Sent" in row and "100%" in row
