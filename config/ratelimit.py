"""Fixed-window counters in the shared cache (Redis in production) for rate limits."""

from django.core.cache import cache

from config import clock


def hit(key: str, window: int, *, offset: int = 0) -> int:
    """Count one event under `key` in the current `window`-second window (windows start
    `offset` seconds later than the epoch's); return the count."""
    bucket = f"rate:{key}:{offset}:{(int(clock.now().timestamp()) - offset) // window}"
    cache.add(bucket, 0, timeout=window * 2)
    return cache.incr(bucket)
