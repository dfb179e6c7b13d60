# Drops the index concurrently on PostgreSQL: a plain DROP INDEX would wait for a running import
# and block every data-key read queued behind it.

from django.db import migrations


def drop(apps, schema_editor):
    concurrently = "CONCURRENTLY " if schema_editor.connection.vendor == "postgresql" else ""
    schema_editor.execute(f"DROP INDEX {concurrently}IF EXISTS datakey_master_key")


def create(apps, schema_editor):
    schema_editor.execute(
        "CREATE INDEX IF NOT EXISTS datakey_master_key ON encryption_datakey (master_key_id)")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('encryption', '0002_plain_master_key_index'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            # The hint routes it where the data keys live (encryption.router).
            database_operations=[migrations.RunPython(drop, create, hints={"model_name": "datakey"})],
            state_operations=[
                migrations.RemoveIndex(model_name='datakey', name='datakey_master_key'),
            ],
        ),
    ]
