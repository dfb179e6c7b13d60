"""The consent ledger is append-only at the database: UPDATE and DELETE are refused.

TRUNCATE is left to the database owner (test flushes use it); the application never issues it.
"""

from django.db import migrations

PG_UP = """
CREATE OR REPLACE FUNCTION consents_event_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION USING MESSAGE = 'consents_consentevent is append-only';
END $$ LANGUAGE plpgsql;
CREATE TRIGGER consents_event_append_only BEFORE UPDATE OR DELETE ON consents_consentevent
    FOR EACH ROW EXECUTE FUNCTION consents_event_append_only();
"""
PG_DOWN = """
DROP TRIGGER IF EXISTS consents_event_append_only ON consents_consentevent;
DROP FUNCTION IF EXISTS consents_event_append_only();
"""
SQLITE_UP = [
    "CREATE TRIGGER consents_event_no_update BEFORE UPDATE ON consents_consentevent "
    "BEGIN SELECT RAISE(ABORT, 'consents_consentevent is append-only'); END;",
    "CREATE TRIGGER consents_event_no_delete BEFORE DELETE ON consents_consentevent "
    "BEGIN SELECT RAISE(ABORT, 'consents_consentevent is append-only'); END;",
]
SQLITE_DOWN = ["DROP TRIGGER IF EXISTS consents_event_no_update;",
               "DROP TRIGGER IF EXISTS consents_event_no_delete;"]


def up(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_UP)
    elif vendor == "sqlite":
        for statement in SQLITE_UP:
            schema_editor.execute(statement)


def down(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_DOWN)
    elif vendor == "sqlite":
        for statement in SQLITE_DOWN:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("consents", "0001_initial")]

    operations = [migrations.RunPython(up, down)]
