"""Order intents: what is accepted, what is refused, and the idempotency fingerprint."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

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
    ],
)
def test_invalid_intents_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        OrderIntent.model_validate_json(json.dumps({**BASE, **change}))


def test_json_numbers_become_exact_decimals() -> None:
    intent = OrderIntent.model_validate_json(
        '{"symbol":"AAPL","side":"sell","qty":0.1,"type":"limit","limit_price":123.45}'
    )
    assert intent.qty == Decimal("0.1")
    assert intent.limit_price == Decimal("123.45")


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
