from django.core.management.base import BaseCommand, CommandError

from encryption import access_log


class Command(BaseCommand):
    help = "Check the field access log's hash chain; name every altered or removed row."

    def handle(self, *args, **options):
        problems = access_log.verify()
        if problems:
            for problem in problems:
                self.stderr.write(f"BROKEN: {problem}")
            raise CommandError(f"The field access log chain is broken ({len(problems)} problems).")
        self.stdout.write(self.style.SUCCESS("The field access log chain is intact."))
