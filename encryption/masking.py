"""Masks stored at write time, so lists, exports, search and the API never decrypt.

Rules: `last:N` (show the last N characters), `first:N` (the first N), `fixed:N` (N mask
characters whatever the value, for free text whose length must not leak), `full` (nothing shown).
Whatever the rule, at most half of a value's characters are ever exposed.
"""

import functools
import re

MASK_CHAR = "•"
RULE = re.compile(r"^(last|first|fixed):([0-9]{1,2})$|^full$")
DEFAULT_RULE = "fixed:8"


def validate_rule(rule: str) -> None:
    if not RULE.match(rule or ""):
        raise ValueError("Mask rules are last:N, first:N, fixed:N or full.")


@functools.lru_cache(maxsize=64)
def _parse(rule: str) -> tuple[str, int]:
    validate_rule(rule)
    if rule == "full":
        return "full", 8
    kind, n = rule.split(":")
    return kind, int(n)


def mask(value: str, rule: str) -> str:
    return masker(rule)(value) if value else ""


@functools.lru_cache(maxsize=64)
def masker(rule: str, hidden_as: str = MASK_CHAR):
    """`mask` with the rule parsed once: for callers that mask many values of one field.
    `hidden_as` stands for each hidden character (the sealing helper's is MASK_CHAR already
    escaped for COPY)."""
    kind, n = _parse(rule or DEFAULT_RULE)
    if kind in ("fixed", "full"):
        fixed = hidden_as * n
        return lambda value: fixed if value else ""

    def apply(value: str) -> str:
        if not value:
            return ""
        shown = min(n, len(value) // 2)
        hidden = hidden_as * (len(value) - shown)
        if kind == "last":
            return hidden + value[-shown:] if shown else hidden
        return value[:shown] + hidden

    return apply


def exposed(masked: str) -> str:
    """The characters a mask exposes (what staff search can match)."""
    return masked.replace(MASK_CHAR, "")
