"""Master-key rotation: add a key first in FIELD_ENCRYPTION_KEYS, then run rotate().

Field values are sealed with each person's data key, so rotating the master key only re-wraps
the data keys (small, fast, no value is decrypted). A key may be removed from the environment
once `master_key_usage()` shows no data key under it.
"""

from .datakeys import master_key_usage, rewrap_batch
from .keys import keyring


def rotate(*, batch_size: int = 1000, progress=None) -> dict:
    # Passes over the keys in subject order, until one finds nothing to re-wrap: a key skipped
    # by a pass (locked by someone else, or created under the old key behind the cursor by a
    # worker not yet restarted) is taken by the next.
    total, rewrapped = 0, True
    while rewrapped:
        rewrapped, after = False, None
        while True:
            done, after = rewrap_batch(batch_size, after=after)
            if not done:
                break
            total, rewrapped = total + done, True
            if progress:
                progress(total)
    return {"rewrapped": total, "primary": keyring().primary_id, "usage": master_key_usage()}
