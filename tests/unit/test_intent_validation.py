"""Order intents: what is accepted, what is refused, and the idempotency fingerprint."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from app.domain import decimals
from app.domain.orders import MAX_QTY, OrderIntent

BASE: dict[str, Any] = {"symbol": "AAPL", "side": "buy", "qty": "10", "type": "market"}


def test_defaults_are_a_day_market_order() -> None:
    intent = OrderIntent.model_validate(BASE)
    assert intent.time_in_force.value == "day"
    assert intent.client_order_id is None


@pytest.mark.parametrize(
    "change",
    [
        {"qty": "0"},
        {"qty": "-1"},
        {"qty": "NaN"},
        {"qty": "Infinity"},
        {"qty": "1e10"},
        {"qty": "0.0000001"},
        {"type": "limit"},
        {"limit_price": "1"},
        {"extra": 1},
        {"symbol": ""},
        {"symbol": "TOO-LONG-SYMBOL-XYZ"},
        {"side": "BUY"},
        {"client_order_id": "x" * 65},
        {"qty": True},
        # Strings outside the plain grammar -?digits[.digits], though Decimal() takes them:
        {"qty": "1_0"},
        {"qty": "\uff11\uff10"},  # full-width digits
        {"qty": " 7 "},
        {"qty": "+5"},
        {"qty": ".5"},
        {"qty": "5."},
        {"qty": "1e3"},
        {"qty": ""},
        {"qty": [1]},
    ],
)
def test_invalid_intents_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        OrderIntent.model_validate(decimals.loads(json.dumps({**BASE, **change})))


def test_json_numbers_are_read_from_their_literal_text_not_through_a_float() -> None:
    """Through a binary float both would have become round numbers (1 and 230) and been
    taken; read exactly, each has more decimal places than allowed, and each field says so."""
    body = (
        '{"symbol":"AAPL","side":"sell","qty":1.0000000000000001,"type":"limit",'
        '"limit_price":229.99999999999999}'
    )
    with pytest.raises(ValidationError) as refused:
        OrderIntent.model_validate(decimals.loads(body))
    assert {error["loc"][0] for error in refused.value.errors()} == {"qty", "limit_price"}


@pytest.mark.parametrize(
    ("literal", "value"),
    [("0.1", "0.1"), ("123.45", "123.45"), ("5", "5"), ("1e3", "1000"), ("2.50", "2.5")],
)
def test_a_json_number_is_its_literal_decimal(literal: str, value: str) -> None:
    body = f'{{"symbol":"AAPL","side":"sell","qty":{literal},"type":"market"}}'
    assert OrderIntent.model_validate(decimals.loads(body)).qty == Decimal(value)


def test_a_float_is_refused_not_rounded() -> None:
    """A caller that parsed JSON through binary floats has already lost the digits."""
    with pytest.raises(ValidationError, match="qty"):
        OrderIntent.model_validate({**BASE, "qty": 0.1})


def test_fingerprint_ignores_spelling_but_not_meaning() -> None:
    a = OrderIntent.model_validate({**BASE, "qty": "10"})
    b = OrderIntent.model_validate({**BASE, "qty": "10.000"})
    c = OrderIntent.model_validate({**BASE, "qty": "11"})
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()


def test_fingerprint_is_the_orders_not_where_its_key_travelled() -> None:
    """A key sent as Idempotency-Key, then in the body, names the same order."""
    in_header = OrderIntent.model_validate(BASE)
    in_body = OrderIntent.model_validate({**BASE, "client_order_id": "k-1"})
    assert in_header.fingerprint() == in_body.fingerprint()


@given(qty=st.decimals(min_value=Decimal("0.000001"), max_value=MAX_QTY, places=6))
def test_every_in_range_quantity_with_six_places_is_accepted(qty: Decimal) -> None:
    assert OrderIntent.model_validate({**BASE, "qty": str(qty)}).qty == qty
