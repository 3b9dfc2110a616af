"""Time-ordered identifiers (ULID layout): sorting by id sorts by creation time."""

from __future__ import annotations

import os
import time

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32
# Two characters (10 bits) per lookup: 13 lookups spell the 130 bits of a 26-character id,
# a third of the work of one character at a time (ids are made twice per order).
_PAIRS = tuple(a + b for a in ALPHABET for b in ALPHABET)
_SHIFTS = tuple(range(120, -1, -10))


def new_id(now_ms: int | None = None) -> str:
    """26 characters: 48-bit millisecond timestamp then 80 random bits, Crockford base32."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])
