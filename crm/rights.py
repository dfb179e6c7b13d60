"""The data-subject rights: stop processing (Art. 18), erasure (Art. 17), access and export
(Art. 15/20), the requests register (Art. 12(3): one month to answer) and retention.

Every write runs in one transaction with its audit row (field names only, never values). Data
that apps above crm hold is reached through `crm.extensions` (erasers, exporters,
rights_notifiers): crm calls what they registered and imports none of them.

Callers: the staff admin (crm/admin_rights.py), the API (crm/api.py) and the preference page.
The page passes `source="portal"` only after the contact confirmed the change by email.
"""

import base64
import calendar
import csv
import io
import logging
from datetime import datetime

from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.db.models import Q
from django.utils.translation import gettext as _

from config import clock
from encryption.cipher import DecryptionError
from encryption.datakeys import destroy_data_key
from encryption.models import FieldAccessLog
from encryption.router import keys_db
from encryption.values import open_value

from . import extensions
from .errors import ServiceError
from .exports import neutralise
from .models import (
    Contact,
    EmailOptIn,
    FieldDefinition,
    Kind,
    Lead,
    ListMembership,
    Person,
    RightsRequest,
)
from .registry import ENCRYPTED_CORE, SEALED, custom_context, is_sealed
from .selectors import person_history
from .services import Source, _audit, suppress_address

logger = logging.getLogger(__name__)

LIFT_PERMISSION = "crm.lift_processing_stop"
ERASE_PERMISSION = "crm.erase_person"
# Always personal whatever the registry says: they name or reach the person. `company` is here
# because for a sole trader or a freelancer it is their name.
ALWAYS_PII = ("first_name", "last_name", "email", "phone", "company", *ENCRYPTED_CORE)


class RightsPermissionDenied(ServiceError):
    status_code = 403
    code = "permission_denied"


class AlreadyErased(ServiceError):
    status_code = 409
    code = "already_erased"


# -- the register ---------------------------------------------------------------------------------

def add_one_month(moment: datetime) -> datetime:
    """The same day next month, or that month's last day when it has no such day (31 Jan →
    28/29 Feb): how a deadline "of one month" is counted (EU Regulation 1182/71, Art. 3)."""
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def _actor(actor):
    return actor if getattr(actor, "pk", None) else None


def rights_request_record(*, person, kind: str, source: str, actor=None,
                          note: str = "") -> RightsRequest:
    """Register a request (received now, due in one month) and apply what is applied on receipt:
    an erasure request flags the record (`erasure_request`), a restriction stops processing at
    once (`processing_stop`). A second request of a kind while one is open returns the open one:
    the contact clicking twice is one request."""
    if kind not in RightsRequest.Kind.values:
        raise ServiceError(_("Choose access, erasure or restriction."), field="kind")
    if kind == RightsRequest.Kind.ERASURE:
        return erasure_request(person=person, source=source, actor=actor, note=note)
    if kind == RightsRequest.Kind.RESTRICTION:
        processing_stop(person=person, source=source, actor=actor, note=note)
        return (RightsRequest.objects.filter(person_ref=person.pk, kind=kind)
                .order_by("-received_at", "-id").first())
    return _register(person=person, kind=kind, source=source, actor=actor, note=note)


def _register(*, person, kind: str, source: str, actor, note: str) -> RightsRequest:
    with transaction.atomic():
        open_one = (RightsRequest.objects.select_for_update()
                    .filter(person_ref=person.pk, kind=kind, state=RightsRequest.State.OPEN)
                    .first())
        if open_one is not None:
            return open_one
        now = clock.now()
        request = RightsRequest.objects.create(
            person_id=person.pk, person_ref=person.pk, kind=kind, source=source,
            received_at=now, due_at=add_one_month(now), note=(note or "").strip(),
        )
        _audit(person_id=person.pk, action=f"request_{kind}", fields=[], actor=actor,
               source=source).save()
    return request


def rights_request_close(*, request: RightsRequest, actor=None, note: str = "",
                         state: str = RightsRequest.State.DONE) -> RightsRequest:
    """Mark a request handled (`state` done, or refused with a note saying why)."""
    if state not in (RightsRequest.State.DONE, RightsRequest.State.REFUSED):
        raise ServiceError(_("Close a request as done or refused."), field="state")
    note = (note or "").strip()
    if state == RightsRequest.State.REFUSED and not note:
        raise ServiceError(_("Say why the request is refused."), field="note")
    with transaction.atomic():
        request = RightsRequest.objects.select_for_update().get(pk=request.pk)
        if request.state != RightsRequest.State.OPEN:
            return request
        request.state = state
        request.handled_by = _actor(actor)
        request.handled_at = clock.now()
        if note:
            request.note = f"{request.note}\n{note}".strip()
        request.save()
        _audit(person_id=request.person_ref, action=f"request_{request.kind}_{state}", fields=[],
               actor=actor, source=Source.STAFF if _actor(actor) else Source.SYSTEM).save()
    return request


def access_request_served(*, person) -> None:
    """The contact downloaded their data (Art. 15): their open access requests are done.
    Called by the preference page when it hands over the export."""
    with transaction.atomic():
        if RightsRequest.objects.filter(person_ref=person.pk, kind=RightsRequest.Kind.ACCESS,
                                        state=RightsRequest.State.OPEN).exists():
            _close_open(person.pk, RightsRequest.Kind.ACCESS, actor=None, at=clock.now())
            _audit(person_id=person.pk, action="request_access_done", fields=[], actor=None,
                   source=Source.PORTAL).save()


def _close_open(person_id, kind: str, *, actor, at) -> None:
    RightsRequest.objects.filter(person_ref=person_id, kind=kind,
                                 state=RightsRequest.State.OPEN).update(
        state=RightsRequest.State.DONE, handled_by=_actor(actor), handled_at=at)


# -- stop processing (Art. 18) --------------------------------------------------------------------

def processing_stop(*, person, source: str, actor=None, note: str = "") -> Person:
    """Stop processing the person's data: the record locks everywhere (crm's person services
    refuse writes, imports and workflows skip it, the gateway lets only rights mail through).
    Idempotent: an already stopped record is returned unchanged."""
    with transaction.atomic():
        current = Person.objects.select_for_update().get(pk=person.pk)
        if current.processing_stopped_at is not None:
            return current
        now = clock.now()
        current.processing_stopped_at = now
        current.save(update_fields=["processing_stopped_at", "updated_at"])
        # A restriction is applied the moment it is received: registered as handled.
        RightsRequest.objects.create(
            person=current, person_ref=current.pk, kind=RightsRequest.Kind.RESTRICTION,
            source=source, state=RightsRequest.State.DONE, received_at=now,
            due_at=add_one_month(now), handled_by=_actor(actor), handled_at=now,
            note=(note or "").strip(),
        )
        _audit(person_id=current.pk, action="processing_stop", fields=["processing_stopped_at"],
               actor=actor, source=source).save()
    return current


def processing_resume(*, person, source: str, actor=None, reason: str = "") -> Person:
    """Lift a stop of processing.

    The contact lifts it from their page (`source="portal"`, after their emailed confirmation).
    Anyone else must hold `crm.lift_processing_stop` and give a reason, which is recorded on
    the restriction in the register. Either way the contact is told first: the
    "processing_resumed" notifier writes its (system) email in this same transaction, so the
    lift never commits without it. Idempotent on a record that is not stopped.
    """
    reason = (reason or "").strip()
    if source != Source.PORTAL:
        if not (_actor(actor) and actor.has_perm(LIFT_PERMISSION)):
            raise RightsPermissionDenied(
                _("Lifting a stop of processing needs the dedicated permission."))
        if not reason:
            raise ServiceError(_("Say why processing may resume (it is recorded)."),
                               field="reason")
    with transaction.atomic():
        current = Person.objects.select_for_update().get(pk=person.pk)
        if current.processing_stopped_at is None:
            return current
        notify = extensions.rights_notifiers.get("processing_resumed")
        if notify is not None:
            notify(current.pk)
        now = clock.now()
        restriction = (RightsRequest.objects.select_for_update()
                       .filter(person_ref=current.pk, kind=RightsRequest.Kind.RESTRICTION,
                               lifted_at__isnull=True).order_by("-received_at").first())
        if restriction is None:  # stopped before the register existed
            restriction = RightsRequest(
                person=current, person_ref=current.pk, kind=RightsRequest.Kind.RESTRICTION,
                source=source, state=RightsRequest.State.DONE,
                received_at=current.processing_stopped_at,
                due_at=add_one_month(current.processing_stopped_at), handled_at=now,
            )
        restriction.lifted_at, restriction.lifted_by, restriction.lift_reason = (
            now, _actor(actor), reason)
        restriction.save()
        current.processing_stopped_at = None
        current.save(update_fields=["processing_stopped_at", "updated_at"])
        _audit(person_id=current.pk, action="processing_resume",
               fields=["processing_stopped_at"], actor=actor, source=source).save()
    return current


# -- erasure (Art. 17) ----------------------------------------------------------------------------

def erasure_request(*, person, source: str, actor=None, note: str = "") -> RightsRequest:
    """Record the person's request to be erased: flags the record (staff filter on it) and opens
    an erasure request in the register. Staff then run `person_erase`."""
    with transaction.atomic():
        current = Person.objects.select_for_update().get(pk=person.pk)
        if current.erasure_requested_at is None:
            current.erasure_requested_at = clock.now()
            current.save(update_fields=["erasure_requested_at", "updated_at"])
        return _register(person=current, kind=RightsRequest.Kind.ERASURE, source=source,
                         actor=actor, note=note)


def erasable_fields(definitions=None) -> tuple[list[str], list[str]]:
    """(core field names, custom keys) that erasure clears: every `is_pii` or encrypted field,
    the always-personal core fields, and custom keys no definition describes any more."""
    if definitions is None:
        definitions = list(FieldDefinition.objects.all())
    core = list(ALWAYS_PII) + [d.key for d in definitions if d.is_core and (
        d.is_pii or d.is_encrypted) and d.key not in ALWAYS_PII]
    kept_custom = {d.key for d in definitions
                   if not d.is_core and not d.is_pii and not d.is_encrypted}
    custom = [d.key for d in definitions if not d.is_core and d.key not in kept_custom]
    return core, custom


def _person_content_types():
    return ContentType.objects.get_for_models(Person, Lead, Contact,
                                              for_concrete_models=False).values()


def _erase_crm_traces(person_id) -> None:
    """What crm itself holds besides the row: free-text notes in the register, and the staff
    admin's log, whose `object_repr` is the person's name or address."""
    RightsRequest.objects.filter(person_ref=person_id).update(note="", lift_reason="")
    LogEntry.objects.filter(content_type__in=list(_person_content_types()),
                            object_id=str(person_id)).update(object_repr=str(person_id))


def _run_erasers(person_id) -> None:
    for name, eraser in extensions.erasers.items():
        eraser(person_id)
        logger.info("erasure: %s done for a person", name)


def _shred_key(person_id) -> None:
    # Crypto-shredding: without the data key, sealed values (backups included) are gone. When
    # keys live in their own database the delete cannot join this transaction: do it once the
    # erasure committed, so a rolled-back erasure never leaves unreadable values behind.
    if keys_db() == "default":
        destroy_data_key(person_id)
    else:
        transaction.on_commit(lambda: destroy_data_key(person_id))


def person_erase(*, person, source: str, actor=None) -> Person:
    """Erase the person's personal data and leave a PII-free tombstone (GDPR Art. 17).

    In one transaction: the address goes on the suppression list (a keyed hash, so a re-import
    is never mailed); every app's registered eraser deletes what it holds (messages, events,
    pending changes…); every PII field is cleared (core, custom, encrypted — the data key is
    destroyed); `erased_at` is set, `portal_key_version` bumped (old links die) and the erasure
    request closed. The consent ledger stays: it holds no personal data and its chain still
    verifies. Allowed on a stopped record: removing data is not the processing Art. 18 restricts.
    Callers check who may erase (`crm.erase_person`); a second call is harmless.
    """
    with transaction.atomic():
        current = Person.objects.select_for_update().get(pk=person.pk)
        now = clock.now()
        if current.email:
            suppress_address(email=current.email, reason="erased")
        # The erasers run first: they may look the person's address up to find their mail.
        _run_erasers(current.pk)
        _erase_crm_traces(current.pk)
        core, custom_keys = erasable_fields()
        cleared = [name for name in core if getattr(current, name) not in ("", None)]
        for name in core:
            setattr(current, name, None if name in ENCRYPTED_CORE else "")
        custom = dict(current.custom or {})
        known = _known_keys()
        removed = [key for key in custom if key in custom_keys or key not in known]
        current.custom = {k: v for k, v in custom.items() if k not in removed}
        # An erased tombstone is nobody's subscriber: it leaves every marketing list.
        left_lists, _count = ListMembership.objects.filter(person_id=current.pk).delete()
        if left_lists:
            removed.append("marketing_lists")
        current.erased_at = current.erased_at or now
        current.portal_key_version += 1
        current.save()
        _shred_key(current.pk)
        _close_open(current.pk, RightsRequest.Kind.ERASURE, actor=actor, at=now)
        if not RightsRequest.objects.filter(person_ref=current.pk,
                                            kind=RightsRequest.Kind.ERASURE).exists():
            RightsRequest.objects.create(
                person=current, person_ref=current.pk, kind=RightsRequest.Kind.ERASURE,
                source=source, state=RightsRequest.State.DONE, received_at=now,
                due_at=add_one_month(now), handled_by=_actor(actor), handled_at=now,
            )
        _audit(person_id=current.pk, action="erase", fields=[*cleared, *removed], actor=actor,
               source=source).save()
    return current


def _known_keys() -> set[str]:
    return set(FieldDefinition.objects.values_list("key", flat=True))


def person_delete_record(*, person, source: str, actor=None) -> None:
    """Delete the whole record ("Delete record"), leaving nothing about the person behind:
    every app's eraser runs first (rows that outlive the person, such as the mail log, would
    otherwise keep their address), then the row goes and the data key is destroyed. When the
    person asked to be erased, their address's hash stays on the suppression list."""
    from .services import person_delete

    with transaction.atomic():
        current = Person.objects.select_for_update().get(pk=person.pk)
        if current.email and (current.erasure_requested_at or current.erased_at):
            suppress_address(email=current.email, reason="erased")
        _run_erasers(current.pk)
        _erase_crm_traces(current.pk)
        _close_open(current.pk, RightsRequest.Kind.ERASURE, actor=actor, at=clock.now())
        person_delete(person=current, actor=actor, source=source)
        _shred_key(current.pk)


# -- access and portability (Art. 15, 20) ---------------------------------------------------------

_NOT_EXPORTED = {"custom", "locked_fields", "portal_key_version", "owner", "organisation",
                 "import_job",  # their history says they were imported
                 "national_id_mask", "national_id_bidx", "card_number_mask", "card_number_bidx",
                 *ENCRYPTED_CORE}


def _plain(value):
    if isinstance(value, datetime):
        return value.isoformat()
    return value if value is None or isinstance(value, bool | int | float | str) else str(value)


def _open(blob: bytes, *, person_id, context: str):
    try:
        return open_value(blob, subject_id=person_id, context=context)
    except DecryptionError:
        return None  # the key was destroyed (erased): nothing readable is left


def person_export(*, person) -> dict:
    """Everything held about the person, for the person themself ("Download my data").

    Sealed values are decrypted: this is the contact's own data, handed to them. Never return
    it to anyone else — staff see masks and reveal through the logged reveal.
    """
    current = Person.objects.select_related("organisation").get(pk=person.pk)
    fields = {f.name: _plain(getattr(current, f.name)) for f in Person._meta.concrete_fields
              if f.name not in _NOT_EXPORTED}
    fields["organisation"] = current.organisation.name if current.organisation else ""
    for name in ENCRYPTED_CORE:
        sealed = getattr(current, name)
        fields[name] = (_open(sealed.blob, person_id=current.pk,
                              context=Person._meta.get_field(name).context)
                        if sealed is not None else "")
    labels = dict(FieldDefinition.objects.values_list("key", "label"))
    custom = {}
    for key, value in (current.custom or {}).items():
        if is_sealed(value):
            value = _open(base64.b64decode(value[SEALED]), person_id=current.pk,
                          context=custom_context(key))
        custom[key] = value
    data = {
        "exported_at": clock.now().isoformat(),
        "person": fields,
        "custom_fields": {labels.get(k, k): v for k, v in custom.items()},
        "marketing_lists": list(current.marketing_lists.values_list("name", flat=True)),
        "rights_requests": [
            {"kind": r.kind, "state": r.state, "received_at": _plain(r.received_at),
             "due_at": _plain(r.due_at), "handled_at": _plain(r.handled_at),
             "lifted_at": _plain(r.lifted_at), "lift_reason": r.lift_reason}
            for r in RightsRequest.objects.filter(person_ref=current.pk)
        ],
        # When a sensitive value of theirs was revealed to staff, in which role (not who).
        "sensitive_field_reveals": [
            {"field": field, "role": role, "at": _plain(at)}
            for field, role, at in FieldAccessLog.objects.filter(subject_id=current.pk)
            .order_by("seq").values_list("field", "role", "at")
        ],
        # Which fields changed, when and through which path (never values, never staff names).
        "history": [
            {"at": _plain(e.at), "action": e.action, "fields": e.fields, "via": e.source}
            for e in reversed(person_history(current))
        ],
    }
    for name, exporter in extensions.exporters.items():
        data[name] = exporter(current.pk)
    return data


def _flatten(prefix: str, value, rows: list) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, rows)
    elif isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        for index, item in enumerate(value, start=1):
            _flatten(f"{prefix}.{index}" if prefix else str(index), item, rows)
    elif isinstance(value, list):
        rows.append((prefix, ", ".join(str(v) for v in value)))
    else:
        rows.append((prefix, value))


def person_export_csv(*, person) -> str:
    """`person_export` as CSV rows (section, field, value); cells a spreadsheet would run as a
    formula are neutralised (the contact opens this file in one)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["section", "field", "value"])
    for section, value in person_export(person=person).items():
        rows: list = []
        _flatten("", value, rows)
        for field, cell in rows:
            writer.writerow([neutralise(section), neutralise(field), neutralise(cell)])
    return "\ufeff" + out.getvalue()


# -- retention ------------------------------------------------------------------------------------

def unconfirmed_leads_due(*, months: int):
    """Leads who never confirmed double opt-in, created more than `months` ago.

    Left out: stopped records (Art. 18 restriction means the person asked us to keep the data
    while they contest something — deleting it would defeat the request), erased tombstones
    (nothing personal left) and anyone with an open rights request (it must be answered first).
    """
    cutoff = _months_before(clock.now(), months)
    return (Person.objects.filter(kind=Kind.LEAD, created_at__lt=cutoff,
                                  processing_stopped_at__isnull=True, erased_at__isnull=True)
            .exclude(email_opt_in=EmailOptIn.DOUBLE_OPT_IN)
            .exclude(Q(rights_requests__state=RightsRequest.State.OPEN)))


def _months_before(moment: datetime, months: int) -> datetime:
    year, month = divmod(moment.year * 12 + moment.month - 1 - months, 12)
    month += 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def retention_delete_unconfirmed_leads(*, months: int | None, limit: int = 500) -> int:
    """Delete up to `limit` unconfirmed leads older than `months` (None: retention off).
    Each goes through `person_delete_record`, so the apps above crm forget them too."""
    if not months:
        return 0
    ids = list(unconfirmed_leads_due(months=months).values_list("pk", flat=True)[:limit])
    for pk in ids:
        person = Person.objects.filter(pk=pk).first()
        if person is not None:
            person_delete_record(person=person, source=Source.SYSTEM)
    return len(ids)

