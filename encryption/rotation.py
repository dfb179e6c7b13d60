"""Master-key rotation: add a key first in FIELD_ENCRYPTION_KEYS, then run rotate().

Field values are sealed with each person's data key, so rotating the master key only re-wraps
the data keys (small, fast, no value is decrypted). A key may be removed from the environment
once `master_key_usage()` shows no data key under it.
"""

from .datakeys import master_key_usage, rewrap_batch
from .keys import keyring


def rotate(*, batch_size: int = 1000, progress=None) -> dict:
    total, after = 0, None
    while True:
        done, after = rewrap_batch(batch_size, after=after)
        if not done:
            break
        total += done
        if progress:
            progress(total)
    return {"rewrapped": total, "primary": keyring().primary_id, "usage": master_key_usage()}
