"""Fixed-window counters in the shared cache (Redis in production) for rate limits."""

from django.core.cache import cache

from config import clock


def hit(key: str, window: int) -> int:
    """Count one event under `key` in the current `window`-second window; return the count."""
    bucket = f"rate:{key}:{int(clock.now().timestamp()) // window}"
    cache.add(bucket, 0, timeout=window * 2)
    return cache.incr(bucket)
