"""Seed the field registry with the core person fields and create the two roles."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

CORE_FIELDS = [
    # key, label, type, is_pii, position
    ("first_name", "First name", "text", True, 10),
    ("last_name", "Last name", "text", True, 20),
    ("email", "Email", "text", True, 30),
    ("phone", "Phone", "text", True, 40),
    ("company", "Company", "text", False, 50),
    ("country", "Country", "text", False, 60),
    ("region", "Region", "choice", False, 70),
    ("stage", "Stage", "choice", False, 80),
    ("language", "Language", "choice", False, 90),
]


def seed(apps, schema_editor):
    FieldDefinition = apps.get_model("crm", "FieldDefinition")
    for key, label, field_type, is_pii, position in CORE_FIELDS:
        FieldDefinition.objects.update_or_create(
            key=key,
            defaults={"label": label, "field_type": field_type, "is_core": True,
                      "is_pii": is_pii, "position": position},
        )
    # Permissions are normally created after all migrations ran; create them now so the roles
    # can be granted them in this same migration.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    from crm.roles import sync_roles

    sync_roles(apps.get_model("auth", "Group"), apps.get_model("auth", "Permission"))


def unseed(apps, schema_editor):
    apps.get_model("crm", "FieldDefinition").objects.filter(is_core=True).delete()
    apps.get_model("auth", "Group").objects.filter(name__in=["Admins", "Staff"]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0001_initial"),
        ("campaigns", "0001_local_mailbox"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(seed, unseed)]
