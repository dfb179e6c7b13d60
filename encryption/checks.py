"""System checks: the encryption keys must be present and well formed before anything starts."""

from django.core.checks import Error, Warning, register
from django.core.exceptions import ImproperlyConfigured


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
