"""The error tree drawn at the top of app/domain/errors.py is the hierarchy itself."""

from __future__ import annotations

import re

from app.domain import errors
from app.domain.errors import GatewayError

LINE = re.compile(r"^\s*[|+\- ]*(\w+)\s+(\d{3}|4xx)\s+(\S+)")


def _all_subclasses(root: type[GatewayError]) -> set[type[GatewayError]]:
    """Every error class but private bases (``_RetryLater``), which answer nothing."""
    found = set() if root.__name__.startswith("_") else {root}
    for sub in root.__subclasses__():
        found |= _all_subclasses(sub)
    return found


def test_the_drawn_tree_names_every_error_with_its_status_and_code() -> None:
    assert errors.__doc__ is not None
    drawn = {m.group(1): m for line in errors.__doc__.splitlines() if (m := LINE.match(line))}
    assert set(drawn) == {cls.__name__ for cls in _all_subclasses(GatewayError)}
    for name, match in drawn.items():
        cls = getattr(errors, name)
        if match.group(2) != "4xx":
            assert cls.status == int(match.group(2)), name
        if "<" not in match.group(3):
            assert cls.code == match.group(3), name
