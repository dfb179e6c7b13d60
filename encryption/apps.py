from django.apps import AppConfig


class EncryptionConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "encryption"
    verbose_name = "Encryption"

    def ready(self):
        from . import checks  # noqa: F401  (registers the key check)
