"""The two roles, defined once and enforced by model permissions in the staff UI and the API.

Admins hold every permission (settings included). Staff work leads and contacts and hold no
permission on a settings model, so no settings page or endpoint is reachable for them.
Later apps add their staff permissions to STAFF_PERMISSIONS; `sync_roles` runs after every
migrate, so new models reach the right group without a hand-written data migration each time.
"""

ADMINS = "Admins"
STAFF = "Staff"

STAFF_PERMISSIONS = {
    "crm.view_person", "crm.add_person", "crm.change_person",
    "crm.view_lead", "crm.add_lead", "crm.change_lead",
    "crm.view_contact", "crm.add_contact", "crm.change_contact",
    "crm.convert_lead",
    "crm.view_organisation", "crm.add_organisation", "crm.change_organisation",
    "crm.view_marketinglist", "crm.add_marketinglist", "crm.change_marketinglist",
    "crm.view_listmembership", "crm.add_listmembership", "crm.delete_listmembership",
    "crm.view_auditentry",
    "crm.view_importjob", "crm.add_importjob",
    "campaigns.view_mailboxmessage", "campaigns.view_emailmessage",
    "campaigns.view_doubleoptinbatch",
    # Campaigns: build, send, pause and cancel them, see their stats and who engaged.
    "campaigns.view_campaign", "campaigns.add_campaign", "campaigns.change_campaign",
    "campaigns.view_trackingevent",
    # Consents: see every answer, record one a person gave on paper, work with segments and the
    # report. Purposes, policy texts and consent settings stay with the Admins.
    "consents.view_consent", "consents.add_consent", "consents.view_consentevent",
    "consents.view_segment", "consents.add_segment", "consents.change_segment",
}


# Never Staff's: lifting a stop of processing the person asked for, erasing a person, and the
# requests register (crm/rights.py). Admins hold them as they hold every permission.
ADMIN_ONLY_PERMISSIONS = {
    "crm.lift_processing_stop", "crm.erase_person",
    "crm.view_rightsrequest", "crm.add_rightsrequest", "crm.change_rightsrequest",
}


def sync_roles(group_model, permission_model) -> None:
    """Create both groups and give them their permissions (idempotent; adds, never removes
    a permission an admin granted by hand)."""
    admins, _ = group_model.objects.get_or_create(name=ADMINS)
    staff, _ = group_model.objects.get_or_create(name=STAFF)
    admins.permissions.add(*permission_model.objects.all())
    wanted = [p.split(".", 1) for p in STAFF_PERMISSIONS]
    staff_perms = [
        perm for perm in permission_model.objects.select_related("content_type")
        if [perm.content_type.app_label, perm.codename] in wanted
    ]
    staff.permissions.add(*staff_perms)
