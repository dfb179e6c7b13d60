"""System checks: the encryption keys must be present and well formed before anything starts."""

from django.core.checks import Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError


@register()
def check_encryption_keys(app_configs, **kwargs):
    from .keys import keyring

    try:
        ring = keyring()
    except ImproperlyConfigured as error:
        return [Error(str(error), id="encryption.E001",
                      hint="See the README: FIELD_ENCRYPTION_KEYS and BLIND_INDEX_KEY.")]
    if ring.development:
        return [Warning(
            "Development encryption keys (var/dev-encryption-keys.json) are in use.",
            hint="Set FIELD_ENCRYPTION_KEYS and BLIND_INDEX_KEY before storing real data.",
            id="encryption.W001",
        )]
    return []


@register(Tags.database)
def check_master_keys_in_use(app_configs, databases=None, **kwargs):
    """A master key that still wraps data keys must stay configured: without it those people's
    values cannot be opened. Runs with the database checks (`migrate`, `check --database`)."""
    if not databases:
        return []
    from .datakeys import master_key_usage
    from .keys import keyring

    try:
        configured = set(keyring().keys)
        usage = master_key_usage()
    except (ImproperlyConfigured, DatabaseError):  # E001 says it; or not migrated yet
        return []
    missing = sorted(key_id for key_id, count in usage.items()
                     if count and key_id not in configured)
    if not missing:
        return []
    return [Error(
        f"Master keys that still wrap data keys are not configured: {', '.join(missing)} "
        f"({sum(usage[k] for k in missing)} data keys).",
        hint="Put them back in FIELD_ENCRYPTION_KEYS (after the primary) and run "
             "`manage.py rotate_keys`; retire a key only once rotate_keys reports it unused.",
        id="encryption.E002",
    )]
