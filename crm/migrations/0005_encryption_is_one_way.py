"""A database trigger refuses switching a field's encryption off, whatever the path (admin, API,
a later migration, raw SQL). Encrypted values cannot be decrypted back in bulk by design."""

from django.db import migrations

PG_UP = """
CREATE OR REPLACE FUNCTION crm_fielddefinition_encryption_one_way() RETURNS trigger AS $$
BEGIN
    IF OLD.is_encrypted AND NOT NEW.is_encrypted THEN
        RAISE EXCEPTION USING MESSAGE =
            'Encryption of field ' || OLD.key || ' cannot be switched off';
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER crm_fielddefinition_encryption_one_way BEFORE UPDATE ON crm_fielddefinition
    FOR EACH ROW EXECUTE FUNCTION crm_fielddefinition_encryption_one_way();
"""
PG_DOWN = """
DROP TRIGGER IF EXISTS crm_fielddefinition_encryption_one_way ON crm_fielddefinition;
DROP FUNCTION IF EXISTS crm_fielddefinition_encryption_one_way();
"""
SQLITE_UP = """
CREATE TRIGGER crm_fielddefinition_encryption_one_way BEFORE UPDATE OF is_encrypted
ON crm_fielddefinition WHEN OLD.is_encrypted AND NOT NEW.is_encrypted
BEGIN SELECT RAISE(ABORT, 'Encryption of a field cannot be switched off'); END;
"""
SQLITE_DOWN = "DROP TRIGGER IF EXISTS crm_fielddefinition_encryption_one_way;"


def up(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor in ("postgresql", "sqlite"):
        schema_editor.execute(PG_UP if vendor == "postgresql" else SQLITE_UP)


def down(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor in ("postgresql", "sqlite"):
        schema_editor.execute(PG_DOWN if vendor == "postgresql" else SQLITE_DOWN)


class Migration(migrations.Migration):
    dependencies = [("crm", "0004_register_sensitive_identifiers")]

    operations = [migrations.RunPython(up, down)]
