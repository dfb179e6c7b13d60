from django.apps import AppConfig


class PreferencesPortalConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "preferences_portal"
    verbose_name = "Preference page"
