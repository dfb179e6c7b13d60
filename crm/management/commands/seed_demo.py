"""Fill a development database with demo people, organisations, lists and custom fields.

`make run` calls this after `migrate`, so a newcomer lands in a staff UI with data to work and
two logins to try. Every person is written through `crm.services` (never a raw save), so the demo
data passes the same validation and leaves the same audit trail as real records.

Idempotent: demo person number N has the address `first.last.N@example.com`, and a person whose
address ends in `.N@example.com` counts as already seeded. Keying on the number rather than the
whole address keeps a re-run from duplicating people when a Faker upgrade changes the names it
generates. Organisations and lists are keyed by name, custom fields by key, users by username.
"""

import datetime
import random
import re
import unicodedata
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import Group, Permission
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils.text import slugify

from config import clock
from crm import services
from crm.models import (
    EmailOptIn,
    FieldDefinition,
    FieldType,
    Kind,
    MarketingList,
    Organisation,
    Person,
    Stage,
)
from crm.roles import ADMINS, STAFF, sync_roles

SEED = 20240501
# A development convenience printed by `make run`; production refuses to run without --force.
DEV_PASSWORD = "consenso-demo"  # noqa: S105
EMAIL_DOMAIN = "example.com"  # reserved by RFC 2606: demo mail can never reach a real inbox
_DEMO_EMAIL = re.compile(rf"\.(\d+)@{re.escape(EMAIL_DOMAIN)}$")

# Faker locale -> where its people live: (country, region, weight). Regions follow crm.Region.
LOCALES = {
    "en_GB": [("GB", "UK", 8), ("IE", "EU", 2), ("AU", "APAC", 2), ("SG", "APAC", 1),
              ("ZA", "MEA", 1)],
    "it_IT": [("IT", "EU", 1)],
    "de_DE": [("DE", "EU", 7), ("AT", "EU", 3)],
    "fr_FR": [("FR", "EU", 6), ("BE", "EU", 2), ("MA", "MEA", 1), ("SN", "MEA", 1)],
    "es_ES": [("ES", "EU", 6), ("MX", "LATAM", 2), ("AR", "LATAM", 1), ("CO", "LATAM", 1)],
    "en_US": [("US", "NA", 8), ("CA", "NA", 2)],
}
LOCALE_WEIGHTS = {"en_GB": 4, "it_IT": 4, "de_DE": 3, "fr_FR": 3, "es_ES": 3, "en_US": 3}
ENGLISH = {"GB", "IE", "AU", "SG", "ZA", "US", "CA"}

# Fixed (invented) names rather than Faker's, so a Faker upgrade cannot add a second batch.
ORGANISATIONS = [
    ("Aurora Analytics Ltd", "GB"), ("Thistle & Thorn Publishing", "GB"),
    ("Kestrel Logistics Ltd", "GB"), ("Harbourside Dental Group", "GB"),
    ("Liffey Software Labs", "IE"),
    ("Officine Bellavista S.r.l.", "IT"), ("Tessuti Lombardi S.p.A.", "IT"),
    ("Cantina Colle Verde", "IT"), ("Studio Marini & Associati", "IT"),
    ("Trattorie Riunite S.r.l.", "IT"),
    ("Schneider Backwaren GmbH", "DE"), ("Nordlicht Energie AG", "DE"),
    ("Hoffmann Präzisionstechnik GmbH", "DE"), ("Alpenblick Hotels GmbH", "AT"),
    ("Atelier Lumière SARL", "FR"), ("Vignobles Dufresne", "FR"),
    ("Clinique Saint-Aubin", "FR"), ("Brasserie Van Hove", "BE"),
    ("Soluciones Mediterráneo S.L.", "ES"), ("Olivares del Sur S.A.", "ES"),
    ("Grupo Alameda S.A. de C.V.", "MX"),
    ("Blue Ridge Outfitters Inc.", "US"), ("Cascade Health Partners", "US"),
    ("Prairie Wind Learning Co.", "US"), ("Northern Pines Robotics Inc.", "CA"),
]

INDUSTRIES = ["Software", "Manufacturing", "Retail", "Healthcare", "Finance", "Education",
              "Hospitality", "Public sector"]
TOPICS = ["Product updates", "Events", "Privacy and compliance", "Case studies", "Webinars",
          "Partner news"]
CUSTOM_FIELDS = [
    # key, label, type, choices, is_pii, help text
    ("industry", "Industry", FieldType.CHOICE, INDUSTRIES, False, "Sector of their company."),
    ("budget", "Budget (EUR)", FieldType.NUMBER, [], False, "Yearly budget they mentioned."),
    ("first_contact", "First contact", FieldType.DATE, [], False, "When we first spoke."),
    ("newsletter_topic", "Newsletter topic", FieldType.TEXT, [], True, "What they want to read."),
    ("vip", "VIP", FieldType.BOOLEAN, [], True, "Handle with extra care."),
]

LISTS = {
    "Newsletter": "Monthly newsletter (demo data).",
    "Product updates": "Release notes and product news (demo data).",
    "Events — Italy": "Invitations to events in Italy (demo data).",
    "Customers": "Everyone at the customer stage (demo data).",
    "Webinar — Privacy by design": "Registrants of the privacy webinar (demo data).",
}

# Colleagues who own records, so the owner filter has something to show. They cannot log in.
COLLEAGUES = [("giulia.conti", "Giulia", "Conti"), ("tom.baker", "Tom", "Baker"),
              ("lena.hoffmann", "Lena", "Hoffmann")]

LEAD_STAGES = {Stage.NEW: 35, Stage.CONTACTED: 30, Stage.QUALIFIED: 20, Stage.READY_TO_BUY: 10,
               Stage.INACTIVE: 5}
CONTACT_STAGES = {Stage.CUSTOMER: 60, Stage.QUALIFIED: 15, Stage.READY_TO_BUY: 10,
                  Stage.INACTIVE: 15}

# Letters NFKD does not decompose into ASCII.
_FOLD = str.maketrans({"ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d", "þ": "th",
                       "ð": "d", "ı": "i"})


def ascii_fold(text: str) -> str:
    """'Łukasz Müller-Öz' -> 'lukaszmulleroz': safe for the local part of an address."""
    text = unicodedata.normalize("NFKD", text.lower().translate(_FOLD))
    return re.sub(r"[^a-z0-9]", "", text.encode("ascii", "ignore").decode())


def demo_email(first_name: str, last_name: str, number: int) -> str:
    local = ".".join(part for part in (ascii_fold(first_name), ascii_fold(last_name)) if part)
    return f"{local or 'demo'}.{number}@{EMAIL_DOMAIN}"


@dataclass
class PlannedPerson:
    number: int
    data: dict
    custom: dict
    owner: str | None
    organisation: str | None
    convert: bool
    lists: list[str] = field(default_factory=list)


def plan_people(numbers: set[int]) -> list[PlannedPerson]:
    """The people numbered 1..max(numbers), generated in order, keeping those in `numbers`.

    Person N is the same whatever the count, so seeding 40 and later 300 adds people 41-300.
    """
    # Imported here: building the Faker locales takes most of a second, and a re-run that finds
    # every person already seeded never needs it.
    from faker import Faker

    rng = random.Random(SEED)
    fakers = {}
    for offset, locale in enumerate(LOCALES):
        fakers[locale] = Faker(locale)
        fakers[locale].seed_instance(SEED + offset)
    orgs_by_country: dict[str, list[str]] = {}
    for name, country in ORGANISATIONS:
        orgs_by_country.setdefault(country, []).append(name)
    owners = [None, "admin", "staff"] + [username for username, _, _ in COLLEAGUES]
    today = clock.now().date()

    planned = []
    for number in range(1, max(numbers, default=0) + 1):
        locale = rng.choices(list(LOCALE_WEIGHTS), weights=list(LOCALE_WEIGHTS.values()))[0]
        fake = fakers[locale]
        places = LOCALES[locale]
        country, region, _ = rng.choices(places, weights=[w for _, _, w in places])[0]
        first_name, last_name = fake.first_name(), fake.last_name()
        roll = rng.random()
        kind = Kind.LEAD if roll < 0.5 or roll >= 0.75 else Kind.CONTACT
        convert = roll >= 0.75
        if kind == Kind.CONTACT:
            stage = rng.choices(list(CONTACT_STAGES), weights=list(CONTACT_STAGES.values()))[0]
        elif convert:
            stage = rng.choice([Stage.READY_TO_BUY, Stage.CUSTOMER])
        else:
            stage = rng.choices(list(LEAD_STAGES), weights=list(LEAD_STAGES.values()))[0]
        organisation = None
        if orgs_by_country.get(country) and rng.random() < 0.6:
            organisation = rng.choice(orgs_by_country[country])
        company = organisation or (fake.company()[:200] if rng.random() < 0.5 else "")
        phone = fake.phone_number()[:40] if rng.random() < 0.85 else ""
        opt_in = (EmailOptIn.SINGLE_OPT_IN_USER if rng.random() < 0.4 else EmailOptIn.NONE)
        custom = {}
        if rng.random() < 0.85:
            custom["industry"] = rng.choice(INDUSTRIES)
        if rng.random() < 0.8:
            custom["budget"] = rng.randrange(2, 500) * 500
        if rng.random() < 0.85:
            custom["first_contact"] = (today - datetime.timedelta(days=rng.randrange(900)))
        if rng.random() < 0.7:
            custom["newsletter_topic"] = rng.choice(TOPICS)
        if rng.random() < 0.9:
            custom["vip"] = rng.random() < 0.12
        person = PlannedPerson(
            number=number,
            data={
                "kind": kind, "first_name": first_name, "last_name": last_name,
                "email": demo_email(first_name, last_name, number), "phone": phone,
                "company": company, "country": country, "region": region, "stage": stage,
                "language": "it" if country == "IT" else ("en" if country in ENGLISH else ""),
                "email_opt_in": opt_in,
            },
            custom=custom,
            owner=rng.choice(owners),
            organisation=organisation,
            convert=convert,
        )
        if rng.random() < 0.5:
            person.lists.append("Newsletter")
        if rng.random() < 0.25:
            person.lists.append("Product updates")
        if country == "IT" and rng.random() < 0.7:
            person.lists.append("Events — Italy")
        if stage == Stage.CUSTOMER:
            person.lists.append("Customers")
        if rng.random() < 0.15:
            person.lists.append("Webinar — Privacy by design")
        if number in numbers:
            planned.append(person)
    return planned


def _usable_custom(custom: dict, definitions: dict[str, FieldDefinition], today) -> dict:
    """Fit the planned values to the definitions as they are in this database.

    An admin may have changed a seeded field's type or choices, or added a required field, since
    the first run; the person service would refuse the person rather than the value.
    """
    spec = {key: field_type for key, _, field_type, _, _, _ in CUSTOM_FIELDS}
    usable = {}
    for key, value in custom.items():
        definition = definitions.get(key)
        if definition is None or definition.field_type != spec[key]:
            continue
        if definition.field_type == FieldType.CHOICE and value not in definition.choices:
            continue
        usable[key] = value
    placeholders = {FieldType.TEXT: "demo", FieldType.NUMBER: 0, FieldType.DATE: today,
                    FieldType.BOOLEAN: False}
    for key, definition in definitions.items():
        if definition.required and key not in usable:
            usable[key] = (definition.choices[0] if definition.field_type == FieldType.CHOICE
                           else placeholders[definition.field_type])
    return usable


class Command(BaseCommand):
    help = "Seed demo people, organisations, lists, custom fields and two logins (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--count", type=int, default=300, help="People to seed (300).")
        parser.add_argument("--admin-password", default=None,
                            help=f"Password for the 'admin' login (default {DEV_PASSWORD!r}).")
        parser.add_argument("--staff-password", default=None,
                            help=f"Password for the 'staff' login (default {DEV_PASSWORD!r}).")
        parser.add_argument("--force", action="store_true",
                            help="Run even when DEBUG is off (never on a production database).")

    def handle(self, *args, count, admin_password, staff_password, force, **options):
        if not settings.DEBUG and not force:
            raise CommandError(
                "DEBUG is off: this looks like production. seed_demo writes fake people and "
                "known passwords; pass --force if you really mean it."
            )
        if count < 0:
            raise CommandError("--count cannot be negative.")
        self._hashes, self._checked = {}, {}
        with transaction.atomic():
            logins = [
                self._ensure_login("admin", ADMINS, admin_password),
                self._ensure_login("staff", STAFF, staff_password),
            ]
            users = {"admin": logins[0][0], "staff": logins[1][0]}
            users.update(self._ensure_colleagues())
            created_fields = self._ensure_definitions()
            organisations, created_orgs = self._ensure_organisations()
            lists, created_lists = self._ensure_lists()
            existing = self._existing_numbers()
            missing = set(range(1, count + 1)) - existing
            people = self._create_people(
                plan_people(missing) if missing else [], users=users,
                organisations=organisations, lists=lists,
            )

        if people:
            contacts = sum(1 for p in people if p.kind == Kind.CONTACT)
            self.stdout.write(
                f"Created {len(people)} demo people ({len(people) - contacts} leads, "
                f"{contacts} contacts), {created_orgs} organisations, {created_lists} marketing "
                f"lists and {created_fields} custom fields."
            )
        if existing:
            self.stdout.write(
                f"Found existing demo data: {len(existing)} demo people already seeded"
                + ("; nothing new to create." if not people else ".")
            )
        self.stdout.write("")
        self.stdout.write(self.style.SUCCESS(f"Consenso staff UI: {settings.SITE_URL}/admin/"))
        for user, group, password in logins:
            shown = password or f"(password kept; --{user.username}-password resets it)"
            self.stdout.write(f"  login: {user.username} / {shown}   (group {group})")

    def _ensure_login(self, username: str, group_name: str, password: str | None):
        """Create or repair one login; return (user, group name, password to print or None).

        An existing user's password is only replaced when the option was given, so re-running
        `make run` does not undo a password the developer changed.
        """
        group = Group.objects.filter(name=group_name).first()
        if group is None:
            # The roles are created by migrate; a database migrated with the signal disabled
            # still gets complete groups rather than empty ones.
            sync_roles(Group, Permission)
            group = Group.objects.get(name=group_name)
        user_model = get_user_model()
        user = user_model.objects.filter(username=username).first()
        if user is None:
            user = user_model(username=username, email=f"{username}@{EMAIL_DOMAIN}",
                              is_staff=True)
            self._set_password(user, password or DEV_PASSWORD)
            user.save()
            shown = password or DEV_PASSWORD
        else:
            if password is not None:
                self._set_password(user, password)
            shown = password or (DEV_PASSWORD if self._has_password(user, DEV_PASSWORD) else None)
            if password is not None or not user.is_staff or not user.is_active:
                user.is_staff = user.is_active = True
                user.save()
        user.groups.add(group)
        return user, group_name, shown

    # A password hash costs most of a second by design; both logins usually share the dev
    # password, so hash (and check) it once per run.
    def _set_password(self, user, raw: str) -> None:
        if raw not in self._hashes:
            self._hashes[raw] = make_password(raw)
        user.password = self._hashes[raw]

    def _has_password(self, user, raw: str) -> bool:
        key = (user.password, raw)
        if key not in self._checked:
            self._checked[key] = user.check_password(raw)
        return self._checked[key]

    def _ensure_colleagues(self) -> dict:
        user_model = get_user_model()
        staff = Group.objects.get(name=STAFF)
        found = {u.username: u for u in user_model.objects.filter(
            username__in=[username for username, _, _ in COLLEAGUES])}
        for username, first_name, last_name in COLLEAGUES:
            if username not in found:
                user = user_model(username=username, first_name=first_name, last_name=last_name,
                                  email=f"{username}@{EMAIL_DOMAIN}", is_staff=True)
                user.set_unusable_password()
                user.save()
                user.groups.add(staff)
                found[username] = user
        # The person service refuses a non-staff owner; leave records unowned rather than fail.
        return {name: user for name, user in found.items() if user.is_staff}

    def _ensure_definitions(self) -> int:
        existing = set(FieldDefinition.objects.filter(
            key__in=[key for key, *_ in CUSTOM_FIELDS]).values_list("key", flat=True))
        created = 0
        for position, (key, label, field_type, choices, is_pii, help_text) in enumerate(
            CUSTOM_FIELDS, start=1
        ):
            if key in existing:
                continue
            services.field_definition_save(definition=FieldDefinition(
                key=key, label=label, field_type=field_type, choices=choices, is_pii=is_pii,
                help_text=help_text, position=200 + position * 10,
            ))
            created += 1
        return created

    def _ensure_organisations(self):
        found = {o.name: o for o in Organisation.objects.filter(
            name__in=[name for name, _ in ORGANISATIONS])}
        created = 0
        for name, country in ORGANISATIONS:
            if name not in found:
                found[name] = services.organisation_save(organisation=Organisation(
                    name=name, country=country, website=f"https://{slugify(name)}.{EMAIL_DOMAIN}",
                ))
                created += 1
        return found, created

    def _ensure_lists(self):
        found = {m.name: m for m in MarketingList.objects.filter(name__in=list(LISTS))}
        created = 0
        for name, description in LISTS.items():
            if name not in found:
                found[name] = services.marketing_list_save(
                    marketing_list=MarketingList(name=name, description=description))
                created += 1
        return found, created

    def _existing_numbers(self) -> set[int]:
        emails = Person.objects.filter(email__endswith=f"@{EMAIL_DOMAIN}").values_list(
            "email", flat=True)
        return {int(match.group(1)) for email in emails if (match := _DEMO_EMAIL.search(email))}

    def _create_people(self, planned, *, users, organisations, lists) -> list[Person]:
        if not planned:
            return []
        definitions = {d.key: d for d in FieldDefinition.objects.filter(is_core=False,
                                                                        active=True)}
        people, members = [], {name: [] for name in lists}
        today = clock.now().date()
        for plan in planned:
            data = dict(plan.data, custom=_usable_custom(plan.custom, definitions, today),
                        owner=users.get(plan.owner), organisation=organisations.get(
                            plan.organisation))
            person = services.person_create(data=data, actor=None, source=services.Source.SYSTEM)
            if plan.convert:
                person = services.person_convert_to_contact(
                    person=person, actor=None, source=services.Source.SYSTEM)
            people.append(person)
            for name in plan.lists:
                members[name].append(person.pk)
        for name, person_ids in members.items():
            # Only people created in this run: the service writes an "added to list" audit row
            # for every id it is given, so re-adding the old ones would grow the trail each run.
            if person_ids:
                services.marketing_list_add(marketing_list=lists[name], person_ids=person_ids,
                                            actor=None, source=services.Source.SYSTEM)
        return people
