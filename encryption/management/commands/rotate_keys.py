from django.core.management.base import BaseCommand

from encryption.rotation import rotate


class Command(BaseCommand):
    help = (
        "Re-wrap every data key under the primary master key (the first of "
        "FIELD_ENCRYPTION_KEYS), in batches. Safe to kill and run again: it resumes."
    )

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=1000)
        parser.add_argument("--background", action="store_true",
                            help="Queue the work for a Celery worker instead.")

    def handle(self, *args, batch_size, background, **options):
        if background:
            from encryption.tasks import rotate_keys

            rotate_keys.delay(batch_size)
            self.stdout.write("Queued key rotation for the workers.")
            return
        report = rotate(batch_size=batch_size,
                        progress=lambda done: self.stdout.write(f"re-wrapped {done} data keys"))
        self.stdout.write(self.style.SUCCESS(
            f"Done: {report['rewrapped']} data keys re-wrapped under {report['primary']}."))
        for key_id, count in report["usage"].items():
            note = " (unused: may be retired)" if count == 0 and key_id != report["primary"] else ""
            self.stdout.write(f"  master key {key_id}: {count} data keys{note}")
