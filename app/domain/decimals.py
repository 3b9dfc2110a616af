"""Exact decimals on the wire: how quantities and prices are read from JSON (``loads``, which
every request body goes through), and the one way every answer writes them.

Read: a string in the plain grammar ``-?digits[.digits]`` (ASCII digits, nothing else: no
``_``, no spaces, no exponent, no full-width digits), or a JSON number taken from its literal
text, never through a binary float (``229.99999999999999`` stays what it says). Anything
else is refused, naming the field.

Written: the shortest plain form of the value: no exponent, no trailing zeros, ``0`` for
zero (``100.50`` and ``100.5`` are both ``"100.5"``; ``230.00`` is ``"230"``).
"""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

PLAIN_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?", re.ASCII)


class JsonNumber:
    """A JSON number with a fraction or an exponent, as its literal text (see ``loads``)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def loads(body: str | bytes) -> Any:
    """JSON to Python, numbers with a fraction or an exponent kept as ``JsonNumber`` (their
    literal text) rather than floats; integers are ints (exact already). NaN and Infinity,
    which are not JSON, are left for the validators to refuse. An object that names a key
    twice is refused (``json.JSONDecodeError``): which of the two would a reader take?"""
    return json.loads(
        body, parse_float=JsonNumber, parse_constant=JsonNumber, object_pairs_hook=_unique_keys
    )


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise json.JSONDecodeError(f"the key {key!r} appears twice", "", 0)
            seen.add(key)
    return members


def parse(value: object) -> object:
    """A request's decimal as an exact ``Decimal``; raises ``ValueError`` if it is not one
    (pydantic reports that against the field)."""
    if isinstance(value, Decimal):
        return value  # already exact (built in process, not read from a request)
    if isinstance(value, bool):
        raise ValueError("a decimal number is expected, not a boolean")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, JsonNumber):
        text = value.text
    elif isinstance(value, str):
        if not PLAIN_DECIMAL.fullmatch(value):
            raise ValueError('a decimal is written -?digits[.digits], e.g. "100.25"')
        text = value
    else:
        raise ValueError('a decimal is a JSON number or a string such as "100.25"')
    try:
        return Decimal(text)
    except InvalidOperation as exc:  # pragma: no cover - the grammars above admit none
        raise ValueError(f"not a decimal: {text!r}") from exc


def render(value: Decimal) -> str:
    """The canonical text of a decimal (see the module's docstring)."""
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


# A decimal read exactly and written canonically: for request and answer models.
ExactDecimal = Annotated[
    Decimal,
    BeforeValidator(parse),
    PlainSerializer(render, return_type=str, when_used="json"),
]
