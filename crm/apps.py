from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _sync_roles(sender, **kwargs):
    from django.contrib.auth.models import Group, Permission

    from .roles import sync_roles

    sync_roles(Group, Permission)


class CrmConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "crm"
    verbose_name = "People"

    def ready(self):
        # After every migrate (when Django has created the permissions of new models), keep the
        # two roles complete. Infrastructure, not business logic: it only grants permissions.
        post_migrate.connect(_sync_roles, sender=self, dispatch_uid="crm.sync_roles")
