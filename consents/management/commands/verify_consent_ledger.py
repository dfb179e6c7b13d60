from django.core.management.base import BaseCommand, CommandError

from consents import ledger


class Command(BaseCommand):
    help = "Check every person's consent chain; name each altered, missing or unlinked event."

    def handle(self, *args, **options):
        problems = ledger.verify_all()
        if problems:
            for problem in problems:
                self.stderr.write(f"BROKEN: {problem}")
            raise CommandError(f"The consent ledger is broken ({len(problems)} problems).")
        self.stdout.write(self.style.SUCCESS("Every consent chain is intact."))
