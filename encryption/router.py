"""Routes data keys to the `keys` database when one is configured (KEYS_DATABASE_URL)."""

from django.conf import settings


def keys_db() -> str:
    return "keys" if "keys" in settings.DATABASES else "default"


class KeysRouter:
    def _is_key(self, model) -> bool:
        return model._meta.app_label == "encryption" and model._meta.model_name == "datakey"

    def db_for_read(self, model, **hints):
        return keys_db() if self._is_key(model) else None

    db_for_write = db_for_read

    def allow_relation(self, obj1, obj2, **hints):
        return None

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        if db == "keys":
            return app_label == "encryption" and model_name == "datakey"
        if app_label == "encryption" and model_name == "datakey":
            return keys_db() == db
        return None
