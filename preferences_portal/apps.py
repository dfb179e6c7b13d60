from django.apps import AppConfig


class PreferencesPortalConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "preferences_portal"
    verbose_name = "Preference page"

    def ready(self):
        # Plug into the apps below (they never import this one): the "portal" section of
        # /api/settings/, invitations when the page is enabled or a purpose is added, and the
        # staff buttons on people and purposes.
        from django.db.models.signals import post_delete, post_save

        from consents import services as consent_services
        from consents.models import (
            ConsentPurpose,
            ConsentPurposeVersion,
            PolicyVersion,
            PortalSettings,
        )
        from crm import extensions
        from crm.models import FieldDefinition, MarketingList

        from . import api, invitations, services

        extensions.settings_sections["portal"] = extensions.SettingsSection(
            read=api.read_portal_settings, update=api.update_portal_settings,
            permission="consents.change_portalsettings")
        if invitations.on_portal_enabled not in consent_services.portal_enabled_hooks:
            consent_services.portal_enabled_hooks.append(invitations.on_portal_enabled)
        if invitations.on_purpose_created not in consent_services.purpose_created_hooks:
            consent_services.purpose_created_hooks.append(invitations.on_purpose_created)
        extensions.erasers["preferences_portal"] = services.pending_changes_erase
        # Every page shows these rows alike; each process keeps them while the stamp holds.
        for model in (PortalSettings, ConsentPurpose, ConsentPurposeVersion, PolicyVersion,
                      FieldDefinition, MarketingList):
            for signal in (post_save, post_delete):
                signal.connect(services.shared_stamp_bump, sender=model,
                               dispatch_uid=f"portal-shared-stamp:{model._meta.label}")
        # The admin app (first in INSTALLED_APPS) has registered every admin module by now.
        from .admin import extend_admins

        extend_admins()
