"""The only writers of people, organisations, marketing lists and field definitions.

Every write runs in one transaction with its audit row, which names the fields that changed and
never their values. The record lock (processing stopped, locked fields) is enforced here and only
here: the staff UI, the API, imports and workflows all come through these functions.
"""

import base64
import functools
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.core.validators import EmailValidator, MaxLengthValidator
from django.db import IntegrityError, transaction
from django.utils.translation import gettext as _

from config import clock
from encryption.masking import DEFAULT_RULE, MASK_CHAR, mask, validate_rule
from encryption.values import seal_value

from . import field_encryption
from .errors import FieldLocked, ProcessingStopped, RecordErased
from .models import (
    AuditEntry,
    EmailOptIn,
    FieldDefinition,
    FieldType,
    Kind,
    ListMembership,
    MarketingList,
    Organisation,
    Person,
    SuppressedAddress,
)
from .registry import (
    CORE_EDITABLE,
    ENCRYPTED_CORE,
    MASK_ECHO_MESSAGE,
    SEALED,
    clean_custom,
    core_field_names,
    custom_context,
    custom_definitions,
    custom_text,
    is_sealed,
)


class Source:
    """Where a write came from; recorded in the audit trail (and later in consent evidence)."""

    STAFF = "staff"
    API = "api"
    IMPORT = "import"
    WEBFORM = "webform"
    PORTAL = "portal"
    SYSTEM = "system"


# Staff may set only these on create or import (DESIGN: `single_opt_in_user` is staff-only and
# only at creation); every later change goes through the opt-in service.
OPT_IN_ON_CREATE = (EmailOptIn.NONE, EmailOptIn.SINGLE_OPT_IN_USER)
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_NATIONAL_ID = re.compile(r"^[A-Z0-9][A-Z0-9 ./-]{3,31}$")
_CARD_NOISE = re.compile(r"[\s-]")


def normalise_email(value: str) -> str:
    return (value or "").strip().lower()


def _audit(*, person_id, action: str, fields: Iterable[str], actor, source: str) -> AuditEntry:
    return AuditEntry(
        person_id=person_id,
        action=action,
        fields=sorted(fields),
        actor=actor if getattr(actor, "pk", None) else None,
        source=source,
        at=clock.now(),
    )


def _resolve(model, value, field: str):
    if value in (None, ""):
        return None
    if isinstance(value, model):
        return value
    try:
        return model.objects.get(pk=value)
    except (ObjectDoesNotExist, ValueError, TypeError, ValidationError):
        raise ValidationError({field: [_("Unknown %(model)s.") % {
            "model": model._meta.verbose_name}]}) from None


def person_clean(data: dict, *, person: Person | None = None) -> dict:
    """Validate `data` for a new person (person=None) or an edit and return cleaned values.

    Raises ValidationError keyed by field, and for an edit ProcessingStopped or FieldLocked when
    the record lock forbids it. Callers that show a form (the staff UI) call this to report errors
    next to fields; the write services call it again themselves on the locked, fresh row.
    """
    cleaned, errors = _clean_values(data, person=person, definitions=custom_definitions())
    if person is not None and not errors:
        _check_writable(person, _changed_fields(person, cleaned))
    email = cleaned.get("email")
    if email and "email" not in errors:
        clash = Person.objects.filter(email=email)
        if person is not None:
            clash = clash.exclude(pk=person.pk)
        if clash.exists():
            errors["email"] = [_("A person with this email already exists.")]
    if errors:
        raise ValidationError(errors)
    return cleaned


def person_clean_values(
    data: dict, *, definitions: list[FieldDefinition], person: Person | None = None
) -> dict:
    """The per-record part of `person_clean`: every value checked, no query.

    For callers that validate many records at once (imports): load `definitions` (the active
    custom fields) once and call this per record. It does not check what needs the database —
    the record lock and email uniqueness — nor resolve `organisation`/`owner` without a query;
    a caller that writes must check those itself, set-based (see `person_import_chunk`).
    """
    cleaned, errors = _clean_values(data, person=person, definitions=definitions)
    if errors:
        raise ValidationError(errors)
    return cleaned


def _clean_values(data: dict, *, person: Person | None, definitions) -> tuple[dict, dict]:
    creating = person is None
    allowed = _CREATE_FIELDS if creating else _EDIT_FIELDS
    unknown = set(data) - allowed
    if unknown:
        raise ValidationError(
            {name: [_("This field cannot be written here.")] for name in sorted(unknown)}
        )
    cleaned: dict = {}
    errors: dict = {}
    plain = _plain_columns()
    for name, value in data.items():
        if name == "custom":
            continue
        spec = plain.get(name)
        if spec is not None and type(value) is str:  # the fast accept (see `_plain_columns`)
            text = value.strip()
            choices, max_length, blank = spec
            if (text in choices if choices is not None else len(text) <= max_length) \
                    if text else blank:
                cleaned[name] = text
                continue
        try:
            cleaned[name] = _clean_core(name, value)
        except ValidationError as error:
            errors.update(error.message_dict if hasattr(error, "error_dict") else {
                name: error.messages})
    if creating and not definitions and not data.get("custom"):
        cleaned["custom"] = {}  # what `clean_custom` makes of nothing, with no custom fields
    elif "custom" in data or creating:
        try:
            cleaned["custom"] = clean_custom(
                data.get("custom") or {},
                current=dict(person.custom) if person else {},
                definitions=definitions,
                creating=creating,
            )
        except ValidationError as error:
            errors.update(error.message_dict)
    return cleaned, errors


_EDIT_FIELDS = frozenset(CORE_EDITABLE) | {"custom"}
_CREATE_FIELDS = _EDIT_FIELDS | {"kind", "email_opt_in"}


@functools.cache
def _plain_columns() -> dict:
    """{name: (choices or None, max length, blank allowed)} of the core fields whose whole check
    is their column's — text, stripped, one of its choices or within its length — for the fast
    accept in `_clean_values`: an import cleans eleven fields a row. A value that does not pass
    it goes through `_clean_core`, which decides and words the error (a property test holds the
    two to the same answers)."""
    special = {"organisation", "owner", "kind", "email_opt_in", "email", "country",
               *ENCRYPTED_CORE}
    plain = {}
    for name in sorted(_CREATE_FIELDS - special - {"custom"}):
        field, choices, max_length, checks = _column(name)
        if not checks and max_length is not None:
            plain[name] = (choices, max_length, field.blank)
    return plain


def _clean_core(name: str, value):
    if name == "organisation":
        return _resolve(Organisation, value, name)
    if name == "owner":
        owner = _resolve(get_user_model(), value, name)
        if owner is not None and not owner.is_staff:
            raise ValidationError({name: [_("The owner must be a staff user.")]})
        return owner
    if name == "kind":
        if value not in Kind.values:
            raise ValidationError(_("Choose lead or contact."))
        return value
    if name == "email_opt_in":
        if value not in OPT_IN_ON_CREATE:
            raise ValidationError(
                _("A new person starts at 'none' or, set by staff, 'single_opt_in_user'.")
            )
        return value
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ValidationError(_("Enter text."))
    value = value.strip()
    if name in ENCRYPTED_CORE:
        return _clean_sensitive(name, value)
    if name == "email":
        value = normalise_email(value)
    elif name == "country":
        value = value.upper()
        if value and not _COUNTRY.match(value):
            raise ValidationError(_("Enter a two-letter ISO country code."))
    _check_column(name, value)
    return value


class _EagerEmailValidator(EmailValidator):
    """Django's email check with its patterns compiled once here. The class keeps them as lazy
    objects, and each use of one goes through a proxy: 5.7 µs an address against 1.8, which an
    import pays per row. Same patterns, same answers (a property test compares them)."""

    user_regex = re.compile(EmailValidator.user_regex.pattern, EmailValidator.user_regex.flags)
    domain_regex = re.compile(EmailValidator.domain_regex.pattern,
                              EmailValidator.domain_regex.flags)
    literal_regex = re.compile(EmailValidator.literal_regex.pattern,
                               EmailValidator.literal_regex.flags)


def _eager(validator):
    if type(validator) is EmailValidator:
        return _EagerEmailValidator(message=validator.message, code=validator.code,
                                    allowlist=validator.domain_allowlist)
    return validator


@functools.cache
def _column(name: str):
    field = Person._meta.get_field(name)
    choices = frozenset(str(k) for k, _label in field.flatchoices) if field.choices else None
    # Validators beyond the length limit (the email check) always run.
    checks = tuple(_eager(v) for v in field.validators if not isinstance(v, MaxLengthValidator))
    return field, choices, field.max_length, checks


def _check_column(name: str, value: str) -> None:
    """What `field.clean` checks (blank, choices, validators such as email and length), with
    the empty and valid cases answered without its generic machinery: imports call this for
    every cell. Whenever a check fails, the field's own methods run and word the error."""
    field, choices, max_length, checks = _column(name)
    if not value:
        if not field.blank:
            field.validate(value, None)
        return
    if choices is not None and value not in choices:
        field.validate(value, None)
    if max_length is not None and len(value) > max_length:
        field.run_validators(value)
    try:
        for check in checks:
            check(value)
    except ValidationError:
        field.run_validators(value)
        raise


# A digit → its Luhn-doubled value (2d, minus 9 above 9), which is one digit again; as a
# table of bytes, which translate in C (a str's table is a dict looked up per character).
_LUHN_DOUBLED = bytes.maketrans(b"0123456789", b"0246813579")


def _luhn_ok(digits: str) -> bool:
    """The Luhn check of a string of ASCII digits: every second digit from the right doubled,
    the digit sum a multiple of 10 — the digits' bytes summed, less the zeros' codes."""
    raw = digits.encode()
    return (sum(raw[-1::-2]) + sum(raw[-2::-2].translate(_LUHN_DOUBLED)) - 48 * len(raw)) \
        % 10 == 0


def _clean_sensitive(name: str, value: str) -> str:
    if MASK_CHAR in value:
        raise ValidationError(MASK_ECHO_MESSAGE)
    if not value:
        return ""
    if name == "card_number":
        digits = value if value.isdigit() else _CARD_NOISE.sub("", value)
        if not (digits.isascii() and digits.isdigit() and 12 <= len(digits) <= 19
                and _luhn_ok(digits)):
            raise ValidationError(_("Enter a valid card number."))
        return digits
    value = value.upper()
    if not _NATIONAL_ID.match(value):
        raise ValidationError(_("Enter a national ID of 4 to 32 letters and digits."))
    return value


def _seal_custom(custom: dict, *, subject_id, definitions=None, seal=seal_value) -> dict:
    """Seal the plaintext values of encrypted custom fields (sealed ones pass through).

    Bulk callers pass the `definitions` they loaded and their own `seal` (same signature as
    `seal_value`), so a batch costs no query per record."""
    if definitions is None:
        definitions = custom_definitions()
    encrypted = {d.key: d for d in definitions if d.is_encrypted}
    sealed = dict(custom)
    for key, value in custom.items():
        definition = encrypted.get(key)
        if definition is None or is_sealed(value):
            continue
        text = custom_text(value)
        blob = seal(text, subject_id=subject_id, context=custom_context(key))
        sealed[key] = {SEALED: base64.b64encode(blob).decode(),
                       "mask": mask(text, definition.mask_rule or DEFAULT_RULE)}
    return sealed


def _check_writable(person: Person, changed: Iterable[str]) -> None:
    if person.erased_at is not None:
        # A tombstone stays free of personal data (GDPR Art. 17; crm.rights.person_erase).
        raise RecordErased(_("This person's data was erased; the record is a tombstone."))
    if person.processing_stopped_at is not None:
        raise ProcessingStopped(
            _("This person asked us to stop processing their data; the record is locked.")
        )
    for name in changed:
        if name in person.locked_fields:
            raise FieldLocked(
                _("The person withdrew consent to store %(field)s; it stays empty.")
                % {"field": name},
                field=name,
            )


def _changed_fields(person: Person, cleaned: dict) -> list[str]:
    changed = []
    for name, value in cleaned.items():
        if name == "custom":
            old = person.custom or {}
            changed += [k for k in set(old) | set(value) if old.get(k) != value.get(k)]
        elif name in ENCRYPTED_CORE:
            # Sealed values cannot be compared without decrypting: any new value is a change.
            if value or getattr(person, name) is not None:
                changed.append(name)
        elif getattr(person, name) != value:
            changed.append(name)
    return changed


def _set_fields(cleaned: dict) -> list[str]:
    names = [k for k, v in cleaned.items() if k != "custom" and v not in ("", None)]
    return names + list(cleaned.get("custom") or {})


def person_create(*, data: dict, actor=None, source: str) -> Person:
    """Create a lead (default) or contact from `data` and record who did it."""
    cleaned = person_clean(data)
    subject_id = uuid.uuid4()
    custom = _seal_custom(cleaned.pop("custom", {}), subject_id=subject_id)
    # Sealing binds each value to the row id, so the id exists before the INSERT.
    person = Person(id=subject_id, custom=custom, **cleaned)
    cleaned["custom"] = custom
    try:
        with transaction.atomic():
            person.save(force_insert=True)
            _audit(person_id=person.pk, action="create", fields=_set_fields(cleaned),
                   actor=actor, source=source).save()
    except IntegrityError:
        # Two writers raced on the same address; the unique index kept one.
        raise ValidationError({"email": [_("A person with this email already exists.")]}) from None
    return person


def person_update(*, person: Person, data: dict, actor=None, source: str) -> Person:
    """Apply `data` to `person`, refusing stopped records and locked fields.

    The lock is checked against the row as it is in the database now (SELECT ... FOR UPDATE),
    not the caller's possibly stale copy.
    """
    try:
        with transaction.atomic():
            current = Person.objects.select_for_update().get(pk=person.pk)
            cleaned = person_clean(data, person=current)
            changed = _changed_fields(current, cleaned)
            if not changed:
                return current
            if "custom" in cleaned:
                cleaned["custom"] = _seal_custom(cleaned["custom"], subject_id=current.pk)
            for name in {c if c in cleaned else "custom" for c in changed}:
                setattr(current, name, cleaned[name])
            current.save()
            _audit(person_id=current.pk, action="update", fields=changed, actor=actor,
                   source=source).save()
    except IntegrityError:
        raise ValidationError({"email": [_("A person with this email already exists.")]}) from None
    return current


def person_convert_to_contact(*, person: Person, actor=None, source: str) -> Person:
    """Turn a lead into a contact: same row, same id, same history."""
    with transaction.atomic():
        current = Person.objects.select_for_update().get(pk=person.pk)
        if current.kind == Kind.CONTACT:
            return current
        _check_writable(current, ["kind"])
        current.kind = Kind.CONTACT
        current.converted_at = clock.now()
        current.save(update_fields=["kind", "converted_at", "updated_at"])
        _audit(person_id=current.pk, action="convert", fields=["kind"], actor=actor,
               source=source).save()
    return current


def person_delete(*, person: Person, actor=None, source: str) -> None:
    """Delete the whole record. The audit trail keeps the id and the fact, no personal data."""
    with transaction.atomic():
        _audit(person_id=person.pk, action="delete", fields=[], actor=actor, source=source).save()
        Person.objects.filter(pk=person.pk).delete()


@dataclass
class BulkResult:
    done: int = 0
    skipped_stopped: int = 0


def _bulk_write(person_ids, *, action: str, fields: list[str], actor, source: str, apply):
    """Lock the rows, skip stopped records, apply a set-based change and audit each person.

    `apply` gets the writable ids and returns the ids it actually changed (only those are audited).
    """
    result = BulkResult()
    with transaction.atomic():
        rows = list(
            Person.objects.select_for_update()
            .filter(pk__in=list(person_ids))
            .values_list("pk", "processing_stopped_at")
        )
        writable = [pk for pk, stopped in rows if stopped is None]
        result.skipped_stopped = len(rows) - len(writable)
        changed = apply(writable)
        result.done = len(changed)
        AuditEntry.objects.bulk_create(
            _audit(person_id=pk, action=action, fields=fields, actor=actor, source=source)
            for pk in changed
        )
    return result


def person_assign_owner(*, person_ids: Iterable, owner, actor=None, source: str) -> BulkResult:
    owner = _clean_core("owner", owner)

    def apply(ids):
        to_change = Person.objects.filter(pk__in=ids)
        to_change = (to_change.exclude(owner=owner) if owner is not None
                     else to_change.filter(owner__isnull=False))
        changed = list(to_change.values_list("pk", flat=True))
        Person.objects.filter(pk__in=changed).update(owner=owner, updated_at=clock.now())
        return changed

    return _bulk_write(person_ids, action="assign_owner", fields=["owner"], actor=actor,
                       source=source, apply=apply)


def marketing_list_add(
    *, marketing_list: MarketingList, person_ids: Iterable, actor=None, source: str
) -> BulkResult:
    """Add people to a list; stopped records are skipped (adding is processing)."""

    def apply(ids):
        existing = set(
            ListMembership.objects.filter(marketing_list=marketing_list, person_id__in=ids)
            .values_list("person_id", flat=True)
        )
        new = [pk for pk in ids if pk not in existing]
        ListMembership.objects.bulk_create(
            [ListMembership(marketing_list=marketing_list, person_id=pk, source=source)
             for pk in new],
            ignore_conflicts=True,
        )
        return new

    return _bulk_write(person_ids, action="list_add", fields=["marketing_lists"], actor=actor,
                       source=source, apply=apply)


def marketing_list_remove(
    *, marketing_list: MarketingList, person_ids: Iterable, actor=None, source: str
) -> int:
    """Remove people from a list. Allowed even for stopped records: it reduces processing."""
    ids = list(person_ids)
    with transaction.atomic():
        removed_ids = list(
            ListMembership.objects.filter(marketing_list=marketing_list, person_id__in=ids)
            .values_list("person_id", flat=True)
        )
        ListMembership.objects.filter(
            marketing_list=marketing_list, person_id__in=removed_ids
        ).delete()
        AuditEntry.objects.bulk_create(
            _audit(person_id=pk, action="list_remove", fields=["marketing_lists"], actor=actor,
                   source=source)
            for pk in removed_ids
        )
    return len(removed_ids)


def organisation_save(*, organisation: Organisation) -> Organisation:
    organisation.full_clean()
    organisation.save()
    return organisation


def marketing_list_save(*, marketing_list: MarketingList) -> MarketingList:
    marketing_list.full_clean()
    marketing_list.save()
    return marketing_list


def field_definition_clean(*, definition: FieldDefinition) -> None:
    """Check a field definition against the registry's invariants (raises ValidationError).

    Encryption is one way: once on it cannot be switched off by any path. Core definitions keep
    their key and type (they describe real columns); custom ones keep their key (stored values
    are keyed by it).
    """
    errors: dict = {}
    before = FieldDefinition.objects.filter(pk=definition.pk).first() if definition.pk else None
    if before is not None:
        if before.is_encrypted and not definition.is_encrypted:
            errors["is_encrypted"] = [_("Encryption cannot be switched off once on.")]
        if before.key != definition.key:
            errors["key"] = [_("A field keeps its key: stored values use it.")]
        if before.is_core and before.field_type != definition.field_type:
            errors["field_type"] = [_("A core field keeps its type.")]
    elif definition.key in core_field_names():
        errors["key"] = [_("This key names a core field.")]
    if definition.field_type == FieldType.CHOICE:
        if not (
            isinstance(definition.choices, list) and definition.choices
            and all(isinstance(c, str) and c.strip() for c in definition.choices)
        ):
            errors["choices"] = [_("A choice field needs a list of non-empty choices.")]
    elif definition.choices:
        errors["choices"] = [_("Only choice fields have choices.")]
    if definition.mask_rule:
        try:
            validate_rule(definition.mask_rule)
        except ValueError:
            errors["mask_rule"] = [_("Mask rules are last:N, first:N, fixed:N or full.")]
    if errors:
        raise ValidationError(errors)


def field_definition_save(*, definition: FieldDefinition) -> FieldDefinition:
    with transaction.atomic():
        if definition.pk:
            # Serialise concurrent edits so the one-way check sees the committed state.
            FieldDefinition.objects.select_for_update().filter(pk=definition.pk).first()
        field_definition_clean(definition=definition)
        definition.full_clean()
        definition.save()
        if definition.is_encrypted and not definition.is_core \
                and field_encryption.has_plain_values(definition.key):
            from .tasks import seal_custom_field_values

            # Values stored before the switch are sealed in the background, in batches; saving
            # the field again queues the job again while any is left (so does a periodic sweep).
            transaction.on_commit(lambda: seal_custom_field_values.delay(definition.pk))
    return definition


def person_lock_field(*, person_id, field: str, actor=None, source: str) -> None:
    """Clear `field` and lock it (storage consent withdrawn). Called by consents' services.

    Allowed even while processing is stopped: removing data is never the processing that
    Art. 18 restricts.
    """
    with transaction.atomic():
        person = Person.objects.select_for_update().get(pk=person_id)
        if field in ENCRYPTED_CORE:
            setattr(person, field, None)
        elif field in core_field_names():
            setattr(person, field, "")
        else:
            person.custom = {k: v for k, v in (person.custom or {}).items() if k != field}
        if field not in person.locked_fields:
            person.locked_fields = [*person.locked_fields, field]
        person.save()
        _audit(person_id=person.pk, action="lock_field", fields=[field], actor=actor,
               source=source).save()


def person_unlock_field(*, person_id, field: str, actor=None, source: str) -> None:
    with transaction.atomic():
        person = Person.objects.select_for_update().get(pk=person_id)
        if field not in person.locked_fields:
            return
        person.locked_fields = [f for f in person.locked_fields if f != field]
        person.save(update_fields=["locked_fields", "updated_at"])
        _audit(person_id=person.pk, action="unlock_field", fields=[field], actor=actor,
               source=source).save()


def address_hasher():
    """The suppression list's keyed hash of a normalised address, as a function: the key is
    derived once, for callers that hash many addresses (a batch, an audience)."""
    import hashlib
    import hmac

    from encryption.keys import derive, keyring

    key = derive(keyring().blind_index_key, "suppression-list")

    def address_hash(email: str) -> str:
        return hmac.new(key, normalise_email(email).encode(), hashlib.sha256).hexdigest()

    return address_hash


def address_hash(email: str) -> str:
    """Keyed hash of a normalised address (the suppression list's key)."""
    return address_hasher()(email)


def suppress_address(*, email: str, reason: str) -> None:
    if normalise_email(email):
        SuppressedAddress.objects.get_or_create(address_hash=address_hash(email),
                                                defaults={"reason": reason})
