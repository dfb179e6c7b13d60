"""The one clock. Code asks `clock.now()`; tests move time with `clock.frozen(...)`, never sleep."""

import contextlib
from datetime import datetime

from django.utils import timezone

_frozen: datetime | None = None


def now() -> datetime:
    return _frozen if _frozen is not None else timezone.now()


@contextlib.contextmanager
def frozen(at: datetime):
    global _frozen
    previous, _frozen = _frozen, at
    try:
        yield
    finally:
        _frozen = previous
