"""Import people from a CSV file: `manage.py import_people FILE [--mapping JSON|FILE] [--user U]`.

The same path as the staff UI and the API (validation, dedupe, record lock, encryption), run in
this process so progress and row errors print here.
"""

import json
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from crm import imports
from crm.models import ImportJob
from crm.services import Source


class Command(BaseCommand):
    help = "Import people from a UTF-8 CSV file whose first line names the columns."

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument(
            "--mapping", help='Column → field key, as JSON or a .json file, e.g. '
            '\'{"E-mail": "email"}\'. Default: columns named after a field key fill it.')
        parser.add_argument("--user", help="Username recorded as the one who imported.")

    def handle(self, *args, file: Path, mapping=None, user=None, **options):
        if not file.is_file():
            raise CommandError(f"No such file: {file}")
        try:
            mapping = self._mapping(mapping)
            actor = get_user_model().objects.get(username=user) if user else None
        except get_user_model().DoesNotExist:
            raise CommandError(f"No user {user!r}.") from None
        job = None
        try:
            with file.open("rb") as upload:
                job = imports.import_job_create(upload=upload, user=actor, source=Source.SYSTEM,
                                                file_name=file.name)
            imports.import_job_set_mapping(job=job, mapping=mapping)
        except ValidationError as error:
            if job is not None:
                imports.import_job_discard(job=job)
            raise CommandError("; ".join(error.messages)) from None
        self.stdout.write(f"{job.total_rows} rows; mapping: {json.dumps(job.mapping)}")
        # Run here rather than by a worker: the command reports as it goes.
        imports.import_job_start(job=job, dispatch=False)
        job = imports.import_job_run(job.pk)
        for error in job.errors:
            reasons = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in
                                error["errors"].items())
            self.stderr.write(f"line {error['line']}: {reasons}")
        if job.error_count > len(job.errors):
            self.stderr.write(f"… and {job.error_count - len(job.errors)} more row errors")
        summary = (f"{job.get_state_display()}: {job.created_count} created, "
                   f"{job.duplicate_count} skipped (email already known), "
                   f"{job.stopped_count} skipped (processing stopped), "
                   f"{job.error_count} rows with errors.")
        if job.state != ImportJob.State.DONE:
            raise CommandError(f"{summary} {job.failure}")
        self.stdout.write(self.style.SUCCESS(summary))

    def _mapping(self, value):
        if not value:
            return None
        path = Path(value)
        text = path.read_text() if value.endswith(".json") and path.is_file() else value
        try:
            return json.loads(text)
        except ValueError as error:
            raise CommandError(f"--mapping is not valid JSON: {error}") from None
