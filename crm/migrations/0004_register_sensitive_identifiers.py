"""Register the two encrypted core fields; only Admins may reveal them until an admin says
otherwise (Settings → Field definitions)."""

from django.db import migrations

FIELDS = [
    ("national_id", "National ID", 100),
    ("card_number", "Card number", 110),
]


def register(apps, schema_editor):
    FieldDefinition = apps.get_model("crm", "FieldDefinition")
    Group = apps.get_model("auth", "Group")
    admins = Group.objects.filter(name="Admins").first()
    for key, label, position in FIELDS:
        definition, _ = FieldDefinition.objects.update_or_create(
            key=key,
            defaults={"label": label, "field_type": "text", "is_core": True, "is_pii": True,
                      "is_encrypted": True, "mask_rule": "last:4", "position": position},
        )
        if admins is not None:
            definition.reveal_groups.add(admins)


def unregister(apps, schema_editor):
    apps.get_model("crm", "FieldDefinition").objects.filter(
        key__in=[key for key, _l, _p in FIELDS]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [("crm", "0003_sensitive_identifiers")]

    operations = [migrations.RunPython(register, unregister)]
