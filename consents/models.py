"""Consent purposes with versioned texts, each person's current state, and the append-only ledger.

Only `consents/services.py` writes these. `ConsentEvent` is never updated or deleted (a database
trigger refuses it) and carries no raw personal data, so erasing a person leaves a valid chain.
"""

from django.db import models
from django.utils.translation import gettext_lazy as _

from crm.models import FieldDefinition, Person


class PurposeKind(models.TextChoices):
    DATA_STORAGE = "data_storage", _("Storing a sensitive field")
    ENGAGEMENT_TRACKING = "engagement_tracking", _("Engagement tracking")
    CUSTOM = "custom", _("Custom purpose")


class ConsentState(models.TextChoices):
    UNKNOWN = "unknown", _("Unknown (never asked)")
    PENDING = "pending", _("Pending (asked, no answer)")
    GRANTED = "granted", _("Granted")
    REVOKED = "revoked", _("Revoked")


class Source(models.TextChoices):
    PORTAL = "portal", _("Preference page")
    WEBFORM = "webform", _("Web form")
    STAFF = "staff", _("Staff")
    IMPORT = "import", _("Import")
    API = "api", _("API")
    DOUBLE_OPT_IN = "double_opt_in", _("Double opt-in")
    SYSTEM = "system", _("System")


class Verification(models.TextChoices):
    EMAIL_CONFIRMATION = "email_confirmation", _("Confirmed by a link in an email")
    STAFF_USER = "staff_user", _("Recorded by a staff member")
    WEB_FORM = "web_form", _("Submitted through a web form")
    API_TOKEN = "api_token", _("Recorded through the API")
    NONE = "none", _("Not verified")


class ConsentPurpose(models.Model):
    key = models.SlugField(_("key"), max_length=64, unique=True)
    name = models.CharField(_("name"), max_length=150)
    kind = models.CharField(_("kind"), max_length=24, choices=PurposeKind.choices)
    field = models.ForeignKey(
        FieldDefinition, verbose_name=_("bound field"), null=True, blank=True,
        on_delete=models.PROTECT, related_name="storage_purposes",
        help_text=_("For storage consents: the field cleared and locked when revoked."),
    )
    default_selected = models.BooleanField(
        _("pre-filled as a suggestion"), default=False,
        help_text=_("Only pre-fills the preference page. A pre-ticked box is not valid consent "
                    "for EU contacts (CJEU, Planet49): the contact must still choose."),
    )
    visibility_rule = models.JSONField(
        _("shown to"), null=True, blank=True,
        help_text=_("A rule (see the rule language); empty means everyone."),
    )
    ttl_days = models.PositiveIntegerField(
        _("grant lapses after (days)"), null=True, blank=True
    )
    active = models.BooleanField(_("active"), default=True)
    position = models.PositiveSmallIntegerField(default=100)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["position", "key"]
        verbose_name = _("consent purpose")

    def __str__(self):
        return self.name


class ConsentPurposeVersion(models.Model):
    """The exact text a contact was shown; a material change makes a new version."""

    purpose = models.ForeignKey(ConsentPurpose, on_delete=models.PROTECT, related_name="versions")
    version = models.PositiveIntegerField()
    title = models.CharField(_("title"), max_length=200)
    text = models.TextField(_("text"))
    text_hash = models.CharField(max_length=64)
    effective_at = models.DateTimeField(_("effective from"))
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["purpose", "-version"]
        constraints = [models.UniqueConstraint(fields=["purpose", "version"],
                                               name="purpose_version_unique")]

    def __str__(self):
        return f"{self.purpose.key} v{self.version}"


class PolicyVersion(models.Model):
    """The data-use policy statement shown on the preference page, versioned like purposes."""

    version = models.PositiveIntegerField(unique=True)
    title = models.CharField(_("title"), max_length=200)
    text = models.TextField(_("text"))
    text_hash = models.CharField(max_length=64)
    effective_at = models.DateTimeField(_("effective from"))
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-version"]
        verbose_name = _("policy version")

    def __str__(self):
        return f"{self.title} v{self.version}"


class Consent(models.Model):
    """A person's current state for one purpose (the ledger holds how it got there)."""

    person = models.ForeignKey(Person, on_delete=models.CASCADE, related_name="consents")
    purpose = models.ForeignKey(ConsentPurpose, on_delete=models.CASCADE, related_name="consents")
    state = models.CharField(max_length=10, choices=ConsentState.choices,
                             default=ConsentState.UNKNOWN)
    version = models.ForeignKey(ConsentPurposeVersion, null=True, on_delete=models.PROTECT,
                                related_name="+")
    last_event = models.ForeignKey("ConsentEvent", null=True, on_delete=models.PROTECT,
                                   related_name="+")
    expires_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["person", "purpose"],
                                               name="consent_person_purpose_unique")]
        indexes = [
            # Filters select people by purpose × state; person_id rides along for the join.
            models.Index(fields=["purpose", "state", "person"], name="consent_purpose_state"),
        ]

    def __str__(self):
        return f"{self.purpose_id}:{self.state}"


class ConsentEvent(models.Model):
    """Append-only proof of one consent or opt-in decision, hash-chained per person.

    `person_id` is a plain column so the chain outlives a deleted record; evidence and hashes
    hold no raw personal data (IP and user agent are keyed hashes).
    """

    person_id = models.UUIDField(db_index=True)
    seq = models.PositiveIntegerField()
    purpose_version = models.ForeignKey(ConsentPurposeVersion, null=True, blank=True,
                                        on_delete=models.PROTECT, related_name="+")
    subject = models.CharField(max_length=64)  # purpose key, or "email_opt_in"
    action = models.CharField(max_length=32)
    state = models.CharField(max_length=24)
    source = models.CharField(max_length=16, choices=Source.choices)
    verified_by = models.CharField(max_length=24, choices=Verification.choices)
    evidence = models.JSONField(default=dict)
    ip_hash = models.CharField(max_length=64, blank=True)
    ua_hash = models.CharField(max_length=64, blank=True)
    at = models.DateTimeField(db_index=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["person_id", "seq"]
        constraints = [models.UniqueConstraint(fields=["person_id", "seq"],
                                               name="consent_event_chain_unique")]

    def __str__(self):
        return f"{self.subject} {self.action} #{self.seq}"


class OptInAccepted(models.TextChoices):
    DOUBLE = "double", _("Double opt-in only")
    DOUBLE_USER = "double+user", _("Double opt-in, or single opt-in recorded by staff")
    DOUBLE_USER_WEBFORM = "double+user+webform", _(
        "Double opt-in, staff-recorded or web-form single opt-in")


class ConsentSettings(models.Model):
    """The admins' consent settings (one row). Read through `consents.selectors.settings()`."""

    opt_in_accepted = models.CharField(
        _("opt-ins good enough for campaigns"), max_length=24, choices=OptInAccepted.choices,
        default=OptInAccepted.DOUBLE,
    )
    tracking_default_when_unknown = models.BooleanField(
        _("track engagement when the tracking consent is unknown"), default=False,
    )
    tracking_delete_on_revoke = models.BooleanField(
        _("delete a person's past opens and clicks when they revoke tracking consent"),
        default=True,
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("consent settings")
        verbose_name_plural = _("consent settings")

    def __str__(self):
        return str(self._meta.verbose_name)


class Segment(models.Model):
    """A named rule, usable as a list filter (and later as a campaign audience)."""

    name = models.CharField(_("name"), max_length=150, unique=True)
    rule = models.JSONField(_("rule"))
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("segment")

    def __str__(self):
        return self.name


class PortalSettings(models.Model):
    """The admins' preference-page settings (one row). Read through
    `consents.selectors.portal_settings()`; written by `consents.services.portal_settings_update`.

    It lives here, below campaigns, because the mail layer appends `email_footer` to staff email
    and the rules are consent rules; the pages themselves are preferences_portal's.
    """

    enabled = models.BooleanField(_("preference page enabled"), default=False)
    # Empty rule: everyone. A person outside it sees only the email preferences.
    access_rule = models.JSONField(_("who may use the full page (rule)"), default=dict, blank=True)
    # Empty rule: nobody. People it admits are told of page access and of new consent requests.
    notification_rule = models.JSONField(_("who is notified (rule)"), default=dict, blank=True)
    email_footer = models.TextField(
        _("footer of staff email"), blank=True,
        help_text=_("Appended to email staff send; {link} becomes the person's own page link."),
    )
    confirmation_hours = models.PositiveIntegerField(
        _("hours a confirmation link stays valid"), default=48)
    # Off (None) by default: deleting people is a decision the controller must take knowingly.
    unconfirmed_lead_retention_months = models.PositiveIntegerField(
        _("delete leads who never confirmed double opt-in after (months)"), null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("preference page settings")
        verbose_name_plural = _("preference page settings")

    def __str__(self):
        return str(self._meta.verbose_name)
