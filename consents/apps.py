from django.apps import AppConfig


class ConsentsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "consents"
    verbose_name = "Consents"

    def ready(self):
        # Plug consent state into crm's person filters, explain and settings (crm never imports
        # consents: it calls what is registered here).
        from crm import extensions

        from . import api, person_filters

        extensions.person_filters["consent"] = api.consent_filter
        extensions.person_filters["segment"] = person_filters.segment_filter
        extensions.person_filters["rule"] = person_filters.rule_filter
        extensions.explain_sections["consents"] = api.explain_consents
        extensions.settings_sections["campaigns"] = extensions.SettingsSection(
            read=api.read_campaign_settings, update=api.update_campaign_settings,
            permission="consents.change_consentsettings")
        extensions.settings_sections["tracking"] = extensions.SettingsSection(
            read=api.read_tracking_settings, update=api.update_tracking_settings,
            permission="consents.change_consentsettings")
        # The rights (crm.rights): "Download my data" includes consent history; retention reads
        # the admins' setting. Nothing is erased here: the ledger is PII-free (consents/rights.py).
        from . import rights

        extensions.exporters["consents"] = rights.export
        extensions.rights_settings["unconfirmed_lead_retention_months"] = (
            rights.unconfirmed_lead_retention_months)
