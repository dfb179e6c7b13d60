"""An encrypted field definition is never deleted, nor renamed, whatever the path: otherwise a
field switched to encrypted could be dropped and made again under its key unencrypted, and new
values stored in plaintext (issue 3: no path may switch encryption off). Retire one by making
it inactive: its sealed values stay sealed."""

from django.db import migrations

PG_UP = """
CREATE OR REPLACE FUNCTION crm_fielddefinition_encryption_one_way() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.is_encrypted THEN
            RAISE EXCEPTION USING MESSAGE =
                'Encrypted field ' || OLD.key || ' cannot be deleted; make it inactive';
        END IF;
        RETURN OLD;
    END IF;
    IF OLD.is_encrypted AND NOT NEW.is_encrypted THEN
        RAISE EXCEPTION USING MESSAGE =
            'Encryption of field ' || OLD.key || ' cannot be switched off';
    END IF;
    IF OLD.is_encrypted AND NEW.key <> OLD.key THEN
        RAISE EXCEPTION USING MESSAGE =
            'Encrypted field ' || OLD.key || ' keeps its key';
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER crm_fielddefinition_encrypted_kept BEFORE DELETE ON crm_fielddefinition
    FOR EACH ROW EXECUTE FUNCTION crm_fielddefinition_encryption_one_way();
"""
PG_DOWN = """
DROP TRIGGER IF EXISTS crm_fielddefinition_encrypted_kept ON crm_fielddefinition;
CREATE OR REPLACE FUNCTION crm_fielddefinition_encryption_one_way() RETURNS trigger AS $$
BEGIN
    IF OLD.is_encrypted AND NOT NEW.is_encrypted THEN
        RAISE EXCEPTION USING MESSAGE =
            'Encryption of field ' || OLD.key || ' cannot be switched off';
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
"""
SQLITE_UP = [  # one statement an execute
    """CREATE TRIGGER crm_fielddefinition_encrypted_kept BEFORE DELETE ON crm_fielddefinition
    WHEN OLD.is_encrypted
    BEGIN SELECT RAISE(ABORT, 'An encrypted field cannot be deleted; make it inactive'); END""",
    """CREATE TRIGGER crm_fielddefinition_encrypted_key_kept BEFORE UPDATE OF key
    ON crm_fielddefinition WHEN OLD.is_encrypted AND NEW.key <> OLD.key
    BEGIN SELECT RAISE(ABORT, 'An encrypted field keeps its key'); END""",
]
SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS crm_fielddefinition_encrypted_kept",
    "DROP TRIGGER IF EXISTS crm_fielddefinition_encrypted_key_kept",
]


def _run(schema_editor, postgresql: str, sqlite: list) -> None:
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(postgresql)
    elif vendor == "sqlite":
        for statement in sqlite:
            schema_editor.execute(statement)


def up(apps, schema_editor):
    _run(schema_editor, PG_UP, SQLITE_UP)


def down(apps, schema_editor):
    _run(schema_editor, PG_DOWN, SQLITE_DOWN)


class Migration(migrations.Migration):
    dependencies = [("crm", "0014_person_import_job")]

    operations = [migrations.RunPython(up, down)]
