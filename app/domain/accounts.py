"""Account names: what the gateway accepts as one."""

from __future__ import annotations

import re

# No braces: the account is the Redis hash tag of its keys ({account}), which must stay whole.
ACCOUNT_PATTERN = r"^[A-Za-z0-9._:\-]{1,64}$"
_ACCOUNT = re.compile(ACCOUNT_PATTERN)


def check_account_name(name: str) -> str:
    """``name`` if it is a valid account name; else ``ValueError`` saying what is allowed."""
    if not _ACCOUNT.fullmatch(name):
        raise ValueError(f"invalid account name {name!r}: 1-64 of letters, digits and . _ : -")
    return name
