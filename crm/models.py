"""People, organisations, marketing lists and the field registry.

Only `crm/services.py` writes these models; everything else reads them or calls a service.
"""

import uuid

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from encryption.fields import EncryptedField, EncryptedModel, EncryptedQuerySet, EqualityIndex


class Kind(models.TextChoices):
    LEAD = "lead", _("Lead")
    CONTACT = "contact", _("Contact")


class Stage(models.TextChoices):
    NEW = "new", _("New")
    CONTACTED = "contacted", _("Contacted")
    QUALIFIED = "qualified", _("Qualified")
    READY_TO_BUY = "ready_to_buy", _("Ready to buy")
    CUSTOMER = "customer", _("Customer")
    INACTIVE = "inactive", _("Inactive")


class Region(models.TextChoices):
    EU = "EU", _("European Union")
    UK = "UK", _("United Kingdom")
    NA = "NA", _("North America")
    LATAM = "LATAM", _("Latin America")
    APAC = "APAC", _("Asia-Pacific")
    MEA = "MEA", _("Middle East and Africa")


class EmailOptIn(models.TextChoices):
    """The six opt-in states of DESIGN.md; transitions are owned by campaigns' opt-in service."""

    NONE = "none", _("None")
    SINGLE_OPT_IN_USER = "single_opt_in_user", _("Single opt-in (staff)")
    SINGLE_OPT_IN_WEBFORM = "single_opt_in_webform", _("Single opt-in (web form)")
    DOUBLE_OPT_IN = "double_opt_in", _("Double opt-in")
    OPT_OUT_USER = "opt_out_user", _("Opted out (by staff)")
    OPT_OUT_CONTACT = "opt_out_contact", _("Opted out (by the contact)")


class Organisation(models.Model):
    name = models.CharField(_("name"), max_length=200, unique=True)
    website = models.URLField(_("website"), blank=True)
    country = models.CharField(_("country"), max_length=2, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("organisation")

    def __str__(self):
        return self.name


class Person(EncryptedModel):
    """One table for leads and contacts; conversion flips `kind` and keeps the row and history."""

    # Generated in Python so encryption can bind a value to its row id before the INSERT.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(_("kind"), max_length=10, choices=Kind.choices, default=Kind.LEAD)
    first_name = models.CharField(_("first name"), max_length=150, blank=True)
    last_name = models.CharField(_("last name"), max_length=150, blank=True)
    email = models.EmailField(_("email"), max_length=254, blank=True)
    phone = models.CharField(_("phone"), max_length=40, blank=True)
    company = models.CharField(_("company"), max_length=200, blank=True)
    organisation = models.ForeignKey(
        Organisation, verbose_name=_("organisation"), null=True, blank=True,
        on_delete=models.SET_NULL, related_name="people",
    )
    country = models.CharField(_("country"), max_length=2, blank=True, help_text=_("ISO code"))
    region = models.CharField(_("region"), max_length=10, choices=Region.choices, blank=True)
    stage = models.CharField(_("stage"), max_length=20, choices=Stage.choices, default=Stage.NEW)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("owner"), null=True, blank=True,
        on_delete=models.SET_NULL, related_name="owned_people",
    )
    # Sensitive identifiers: sealed at rest, masked everywhere, revealed only through a logged
    # reveal. The mask and blind-index columns come first (see EncryptedField).
    national_id_mask = models.CharField(_("national ID"), max_length=64, blank=True)
    national_id_bidx = models.CharField(max_length=16, blank=True)
    national_id = EncryptedField(
        mask_rule="last:4", mask_field="national_id_mask", index_field="national_id_bidx",
        context="crm.person.national_id",
    )
    card_number_mask = models.CharField(_("card number"), max_length=64, blank=True)
    card_number_bidx = models.CharField(max_length=16, blank=True)
    card_number = EncryptedField(
        mask_rule="last:4", mask_field="card_number_mask", index_field="card_number_bidx",
        context="crm.person.card_number",
    )
    language = models.CharField(
        _("language"), max_length=10, choices=settings.LANGUAGES, blank=True
    )
    custom = models.JSONField(_("custom fields"), default=dict, blank=True)
    email_opt_in = models.CharField(
        _("email opt-in status"), max_length=24, choices=EmailOptIn.choices,
        default=EmailOptIn.NONE,
    )
    processing_stopped_at = models.DateTimeField(_("processing stopped"), null=True, blank=True)
    erasure_requested_at = models.DateTimeField(_("erasure requested"), null=True, blank=True)
    erased_at = models.DateTimeField(_("erased"), null=True, blank=True)
    # Fields the person withdrew storage consent for: written by consents' services, enforced by
    # crm's person service (stored as data so crm never imports consents).
    locked_fields = models.JSONField(_("locked fields"), default=list, blank=True)
    # Bumping this invalidates every preference-page link issued to the person.
    portal_key_version = models.PositiveIntegerField(default=1)
    converted_at = models.DateTimeField(_("converted to contact"), null=True, blank=True)
    # The import that created this person, if one did: where their data came from (what GDPR
    # Art. 14-15 has us tell them) and the audit record of their creation — the job keeps who
    # ran it, when, the file and the mapping, so an import writes no audit row per person. A
    # plain reference (no constraint, no index): it is read from the person, and a job that
    # created people is never deleted.
    import_job = models.ForeignKey(
        "ImportJob", verbose_name=_("imported by"), null=True, blank=True, editable=False,
        on_delete=models.DO_NOTHING, db_constraint=False, db_index=False, related_name="+",
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    objects = EncryptedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("person")
        verbose_name_plural = _("people")
        indexes = [
            models.Index(fields=["kind", "-created_at"], name="person_kind_created"),
            models.Index(fields=["stage"], name="person_stage"),
            # Exact-match search on full identifiers; partial, hash (equality is all a blind
            # index is asked): every index slows the import's COPY, so each one here serves a
            # real lookup.
            EqualityIndex(fields=["national_id_bidx"], name="person_national_id_bidx",
                          condition=~Q(national_id_bidx="")),
            EqualityIndex(fields=["card_number_bidx"], name="person_card_number_bidx",
                          condition=~Q(card_number_bidx="")),
            # Opt-in filters and counts read (state, id) from the index alone.
            models.Index(fields=["email_opt_in", "id"], name="person_opt_in_id"),
            models.Index(fields=["region"], name="person_region"),
            models.Index(
                fields=["processing_stopped_at"], name="person_stopped",
                condition=Q(processing_stopped_at__isnull=False),
            ),
            models.Index(
                fields=["erasure_requested_at"], name="person_erasure_requested",
                condition=Q(erasure_requested_at__isnull=False),
            ),
        ]
        constraints = [
            # One person per address: imports and web forms dedupe on it, and every lookup by
            # address uses it (batch lookups state the condition: crm.selectors
            # .people_with_addresses).
            models.UniqueConstraint(
                fields=["email"], condition=~Q(email=""), name="person_email_unique"
            ),
        ]
        permissions = [
            ("convert_lead", "Can convert a lead to a contact"),
            # Dedicated, Admins only (crm/roles.py): lifting a restriction the person asked for
            # (GDPR Art. 18) and erasing a record are never part of ordinary editing.
            ("lift_processing_stop", "Can lift a stop of processing (with a recorded reason)"),
            ("erase_person", "Can erase a person's personal data"),
        ]

    def __str__(self):
        return self.full_name or self.email or str(self.id)

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()


class LeadManager(models.Manager.from_queryset(EncryptedQuerySet)):
    def get_queryset(self):
        return super().get_queryset().filter(kind=Kind.LEAD)


class ContactManager(models.Manager.from_queryset(EncryptedQuerySet)):
    def get_queryset(self):
        return super().get_queryset().filter(kind=Kind.CONTACT)


class Lead(Person):
    objects = LeadManager()

    class Meta:
        proxy = True
        verbose_name = _("lead")


class Contact(Person):
    objects = ContactManager()

    class Meta:
        proxy = True
        verbose_name = _("contact")


class MarketingList(models.Model):
    name = models.CharField(_("name"), max_length=200, unique=True)
    description = models.TextField(_("description"), blank=True)
    members = models.ManyToManyField(
        Person, through="ListMembership", related_name="marketing_lists", blank=True
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("marketing list")

    def __str__(self):
        return self.name


class ListMembership(models.Model):
    marketing_list = models.ForeignKey(MarketingList, on_delete=models.CASCADE)
    person = models.ForeignKey(Person, on_delete=models.CASCADE)
    added_at = models.DateTimeField(auto_now_add=True)
    source = models.CharField(max_length=20, default="staff")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["marketing_list", "person"], name="membership_unique")
        ]

    def __str__(self):
        return f"{self.marketing_list_id}:{self.person_id}"


class FieldType(models.TextChoices):
    TEXT = "text", _("Text")
    NUMBER = "number", _("Number")
    DATE = "date", _("Date")
    CHOICE = "choice", _("Choice")
    BOOLEAN = "boolean", _("Yes/no")


class FieldDefinition(models.Model):
    """The registry of every person field, core or custom, and how sensitive it is.

    Core rows describe columns of `Person`; custom rows describe keys of `Person.custom`.
    `is_encrypted` is one way: once on, no path may switch it off (enforced by the service).
    """

    key = models.SlugField(_("key"), max_length=64, unique=True)
    label = models.CharField(_("label"), max_length=100)
    field_type = models.CharField(
        _("type"), max_length=10, choices=FieldType.choices, default=FieldType.TEXT
    )
    is_core = models.BooleanField(_("core field"), default=False, editable=False)
    choices = models.JSONField(_("choices"), default=list, blank=True)
    required = models.BooleanField(_("required"), default=False)
    help_text = models.CharField(_("help text"), max_length=200, blank=True)
    position = models.PositiveSmallIntegerField(_("position"), default=100)
    active = models.BooleanField(_("active"), default=True)
    is_pii = models.BooleanField(_("personal data"), default=True)
    is_encrypted = models.BooleanField(_("encrypted"), default=False)
    mask_rule = models.CharField(_("mask rule"), max_length=32, blank=True)
    reveal_groups = models.ManyToManyField(
        Group, verbose_name=_("groups allowed to reveal"), blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["position", "key"]
        verbose_name = _("field definition")

    def __str__(self):
        return self.label


class AuditEntry(models.Model):
    """Who changed which fields of a person, when and through which path; never the values.

    `person_id` is a plain column, not a foreign key, so the trail outlives a deleted record.
    """

    person_id = models.UUIDField(db_index=True)
    action = models.CharField(max_length=32)
    fields = models.JSONField(default=list)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    source = models.CharField(max_length=20)
    at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = _("audit entry")
        verbose_name_plural = _("audit trail")

    def __str__(self):
        return f"{self.action} {self.person_id}"


class ImportJob(models.Model):
    """One CSV import of people: its file (sealed, in blocks), column mapping, state and counts.

    Written only by `crm/imports.py`. Row errors keep the line number and the reasons, never the
    row's values; the first `ERRORS_KEPT` are stored, `error_count` counts them all.
    """

    ERRORS_KEPT = 1000

    class State(models.TextChoices):
        DRAFT = "draft", _("Draft (mapping)")
        QUEUED = "queued", _("Queued")
        RUNNING = "running", _("Running")
        DONE = "done", _("Done")
        FAILED = "failed", _("Failed")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("started by"), null=True, blank=True,
        on_delete=models.SET_NULL, related_name="+",
    )
    source = models.CharField(_("via"), max_length=20)
    file_name = models.CharField(_("file"), max_length=255, blank=True)
    file_size = models.PositiveBigIntegerField(_("size (bytes)"), default=0)
    header = models.JSONField(_("columns"), default=list)
    mapping = models.JSONField(_("mapping"), default=dict, help_text=_("column → field key"))
    state = models.CharField(
        _("state"), max_length=10, choices=State.choices, default=State.DRAFT, db_index=True
    )
    total_rows = models.PositiveIntegerField(_("rows"), default=0)
    processed_rows = models.PositiveIntegerField(_("processed"), default=0)
    created_count = models.PositiveIntegerField(_("created"), default=0)
    duplicate_count = models.PositiveIntegerField(_("skipped: already known"), default=0)
    stopped_count = models.PositiveIntegerField(_("skipped: processing stopped"), default=0)
    error_count = models.PositiveIntegerField(_("rows with errors"), default=0)
    errors = models.JSONField(_("row errors"), default=list, blank=True)
    failure = models.TextField(_("failure"), blank=True)
    created_at = models.DateTimeField(_("uploaded"), auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(_("started"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("people import")
        verbose_name_plural = _("people imports")

    def __str__(self):
        return f"{self.file_name or self.pk} ({self.get_state_display()})"


class ImportFileBlock(models.Model):
    """A piece of an import's file, sealed under the job's own data key.

    The file holds plaintext identifiers (card numbers, national IDs): at rest it is encrypted,
    and once the job finishes its blocks are deleted and its key destroyed.
    """

    job = models.ForeignKey(ImportJob, on_delete=models.CASCADE, related_name="blocks")
    seq = models.PositiveIntegerField()
    data = models.BinaryField()

    class Meta:
        ordering = ["job", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["job", "seq"], name="import_block_unique")
        ]

    def __str__(self):
        return f"{self.job_id}#{self.seq}"


class SuppressedAddress(models.Model):
    """A keyed hash of an address that must never be marketed to again (kept after erasure,
    so a re-import of the same address is still suppressed). Holds no readable address."""

    address_hash = models.CharField(max_length=64, unique=True)
    reason = models.CharField(max_length=32)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("suppressed address")
        verbose_name_plural = _("suppression list")

    def __str__(self):
        return f"{self.reason}:{self.address_hash[:12]}"


class RightsRequest(models.Model):
    """The register of data-subject requests (access, erasure, restriction) and their deadline.

    Written only by `crm/rights.py`. `person` is SET_NULL and `person_ref` keeps the id, so the
    register outlives "Delete record". Notes are free text staff may write: erasure blanks them.
    """

    class Kind(models.TextChoices):
        ACCESS = "access", _("Access (Art. 15)")
        ERASURE = "erasure", _("Erasure (Art. 17)")
        RESTRICTION = "restriction", _("Stop processing (Art. 18)")

    class State(models.TextChoices):
        OPEN = "open", _("Open")
        DONE = "done", _("Done")
        REFUSED = "refused", _("Refused")

    person = models.ForeignKey(
        Person, verbose_name=_("person"), null=True, blank=True, on_delete=models.SET_NULL,
        related_name="rights_requests",
    )
    person_ref = models.UUIDField(_("person id"), db_index=True)
    kind = models.CharField(_("request"), max_length=16, choices=Kind.choices)
    source = models.CharField(_("via"), max_length=20)
    state = models.CharField(_("state"), max_length=10, choices=State.choices,
                             default=State.OPEN)
    received_at = models.DateTimeField(_("received"))
    # GDPR Art. 12(3): answer within one month of receipt.
    due_at = models.DateTimeField(_("due"))
    handled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("handled by"), null=True, blank=True,
        on_delete=models.SET_NULL, related_name="+",
    )
    handled_at = models.DateTimeField(_("handled"), null=True, blank=True)
    note = models.TextField(_("note"), blank=True)
    # Restriction only: when and why it was lifted (by the contact, or an admin with a reason).
    lifted_at = models.DateTimeField(_("lifted"), null=True, blank=True)
    lifted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("lifted by"), null=True, blank=True,
        on_delete=models.SET_NULL, related_name="+",
    )
    lift_reason = models.TextField(_("reason for lifting"), blank=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        verbose_name = _("rights request")
        verbose_name_plural = _("rights requests")
        indexes = [models.Index(fields=["state", "due_at"], name="rights_request_state_due")]

    def __str__(self):
        return f"{self.get_kind_display()} ({self.get_state_display()})"
