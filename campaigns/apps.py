from django.apps import AppConfig


class CampaignsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "campaigns"
    verbose_name = "Email and campaigns"

    def ready(self):
        from crm import extensions

        from . import gateway

        # "May we email this person, for which kinds, and why" joins the explain endpoint.
        extensions.explain_sections["email"] = gateway.explain_email
        # The admin app (first in INSTALLED_APPS) has registered crm's person admins by now.
        from .admin_person import extend_person_admins

        extend_person_admins()
        # The rights (crm.rights): erase and export stored messages; tell the contact when a
        # stop of processing is lifted (before it lifts, in the same transaction).
        from . import rights

        extensions.erasers["campaigns"] = rights.erase
        extensions.exporters["email"] = rights.export
        extensions.rights_notifiers["processing_resumed"] = rights.notify_processing_resumed
        # A revoked tracking consent deletes the person's past opens and clicks, in the same
        # transaction (consents calls its hooks; it never imports campaigns).
        from consents import services as consent_services

        from . import tracking

        consent_services.consent_changed_hooks.append(tracking.delete_on_revoke)
        # The people behind one count of a campaign's dry run, on /api/persons/ and the staff
        # list: ?campaign_audience=<campaign id>:<reason>.
        from .api_campaigns import filter_people_by_audience

        extensions.person_filters["campaign_audience"] = filter_people_by_audience
