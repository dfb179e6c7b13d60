from django.apps import AppConfig


class PreferencesPortalConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "preferences_portal"
    verbose_name = "Preference page"

    def ready(self):
        # Plug into the apps below (they never import this one): the "portal" section of
        # /api/settings/, invitations when the page is enabled or a purpose is added, and the
        # staff buttons on people and purposes.
        from consents import services as consent_services
        from crm import extensions

        from . import api, invitations

        extensions.settings_sections["portal"] = extensions.SettingsSection(
            read=api.read_portal_settings, update=api.update_portal_settings,
            permission="consents.change_portalsettings")
        if invitations.on_portal_enabled not in consent_services.portal_enabled_hooks:
            consent_services.portal_enabled_hooks.append(invitations.on_portal_enabled)
        if invitations.on_purpose_created not in consent_services.purpose_created_hooks:
            consent_services.purpose_created_hooks.append(invitations.on_purpose_created)
        # The admin app (first in INSTALLED_APPS) has registered every admin module by now.
        from .admin import extend_admins

        extend_admins()
