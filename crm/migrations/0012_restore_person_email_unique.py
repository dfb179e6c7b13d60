"""Restore the partial unique index on a person's address.

Migration 0009 dropped the email column's `db_index`; Django's schema editor found the indexes
to drop by introspecting the column, and took `person_email_unique` (0001's constraint) with
them. The model state still declared it, so `makemigrations` saw nothing missing while the
database no longer refused a second person with the same address. Created again only where it
is missing; should a database hold duplicate addresses by now, this fails with PostgreSQL's
error naming one, to be merged by hand before migrating.
"""

from django.db import migrations

CREATE = ('CREATE UNIQUE INDEX IF NOT EXISTS "person_email_unique" ON "crm_person" ("email") '
          "WHERE NOT (\"email\" = '')")


class Migration(migrations.Migration):

    dependencies = [
        ("crm", "0011_blind_indexes_hash"),
    ]

    operations = [
        migrations.RunSQL(CREATE, migrations.RunSQL.noop),
    ]
