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
        # After every migrate, keep the two roles complete. Django creates each app's permissions
        # in that app's post_migrate, in INSTALLED_APPS order, so this runs after every app's
        # (idempotent) to see the permissions of apps above crm too. Infrastructure only.
        post_migrate.connect(_sync_roles, dispatch_uid="crm.sync_roles")
