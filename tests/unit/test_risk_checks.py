"""The pre-trade checks that need no shared state, and the limits document."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from app.domain.errors import RiskDenied
from app.domain.orders import OrderIntent
from app.domain.risk import (
    RiskCode,
    RiskLimits,
    TradingState,
    check_static,
    duplicate_signature,
    worst_case_exposure,
)

REF = Decimal("100")


def intent(**fields: Any) -> OrderIntent:
    base: dict[str, Any] = {"symbol": "AAPL", "side": "buy", "qty": "10", "type": "market"}
    return OrderIntent.model_validate(base | fields)


def limit_order(price: str, **fields: Any) -> OrderIntent:
    return intent(type="limit", limit_price=price, **fields)


def refused(order: OrderIntent, limits: RiskLimits, reference: Decimal | None = REF) -> str:
    with pytest.raises(RiskDenied) as caught:
        check_static(order, limits, reference)
    assert caught.value.status == 422
    return caught.value.code


def test_no_limits_let_everything_through_at_the_reference_or_limit_price() -> None:
    assert check_static(intent(), RiskLimits(), REF) == REF
    assert check_static(limit_order("97.5"), RiskLimits(), REF) == Decimal("97.5")


@pytest.mark.parametrize(
    ("limits", "order", "code"),
    [
        (RiskLimits(trading_state=TradingState.HALTED), intent(), RiskCode.TRADING_HALTED),
        (RiskLimits(allowed_symbols=["MSFT"]), intent(), RiskCode.SYMBOL_NOT_ALLOWED),
        (RiskLimits(blocked_symbols=["AAPL"]), intent(), RiskCode.SYMBOL_BLOCKED),
        (RiskLimits(max_order_qty=Decimal(9)), intent(), RiskCode.MAX_ORDER_QTY),
        (
            RiskLimits.model_validate(
                {"max_order_qty": "100", "symbols": {"AAPL": {"max_order_qty": "9"}}}
            ),
            intent(),
            RiskCode.MAX_ORDER_QTY,
        ),
        (RiskLimits(max_order_notional=Decimal(999)), intent(), RiskCode.MAX_ORDER_NOTIONAL),
        (
            RiskLimits(max_order_notional=Decimal(999)),
            limit_order("99.99"),
            RiskCode.MAX_ORDER_NOTIONAL,
        ),
        (RiskLimits(price_collar_pct=Decimal(5)), limit_order("94.99"), RiskCode.PRICE_COLLAR),
        (RiskLimits(price_collar_pct=Decimal(5)), limit_order("105.01"), RiskCode.PRICE_COLLAR),
    ],
)
def test_each_static_check_refuses_with_its_code(
    limits: RiskLimits, order: OrderIntent, code: str
) -> None:
    assert refused(order, limits) == code


def test_boundaries_are_inclusive() -> None:
    limits = RiskLimits(
        max_order_qty=Decimal(10),
        max_order_notional=Decimal(1000),
        price_collar_pct=Decimal(5),
    )
    check_static(intent(), limits, REF)  # qty 10, notional 1000
    check_static(limit_order("95", qty="10"), limits, REF)
    check_static(limit_order("105", qty="9"), limits, REF)


def test_a_symbol_override_applies_to_its_symbol_only() -> None:
    limits = RiskLimits.model_validate(
        {"max_order_qty": "5", "symbols": {"AAPL": {"max_order_qty": "50"}}}
    )
    check_static(intent(qty="50"), limits, REF)
    assert refused(intent(symbol="MSFT", qty="6"), limits) == RiskCode.MAX_ORDER_QTY


def test_without_a_reference_price_market_orders_and_collared_limits_are_refused() -> None:
    assert refused(intent(), RiskLimits(), None) == RiskCode.NO_REFERENCE_PRICE
    collared = RiskLimits(price_collar_pct=Decimal(5))
    assert refused(limit_order("100"), collared, None) == RiskCode.NO_REFERENCE_PRICE
    # No collar configured: a limit order carries its own price.
    assert check_static(limit_order("100"), RiskLimits(), None) == Decimal(100)


def test_halted_comes_before_every_other_check() -> None:
    limits = RiskLimits(trading_state=TradingState.HALTED, max_order_qty=Decimal(1))
    assert refused(intent(), limits) == RiskCode.TRADING_HALTED


@pytest.mark.parametrize(
    "document",
    [
        {"max_order_qty": "-1"},
        {"max_order_qty": "Infinity"},
        {"max_order_notional": "0.001"},
        {"price_collar_pct": "0"},
        {"max_open_orders": -1},
        {"trading_state": "paused"},
        {"allowed_symbols": ["aapl"]},
        {"symbols": {"AAPL": {"max_notional": "1"}}},
        {"unknown": 1},
    ],
)
def test_invalid_limits_are_refused(document: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RiskLimits.model_validate(document)


def test_null_means_no_limit_and_a_null_trading_state_is_active() -> None:
    limits = RiskLimits.model_validate({"max_position": None, "trading_state": None})
    assert limits.max_position is None
    assert limits.trading_state is TradingState.ACTIVE


def test_duplicate_signature_ignores_spelling_and_the_client_order_id() -> None:
    a = intent(qty="10.0", client_order_id="a")
    b = intent(qty="10", client_order_id="b")
    assert duplicate_signature(a) == duplicate_signature(b)
    assert duplicate_signature(a) != duplicate_signature(intent(qty="11"))
    assert duplicate_signature(a) != duplicate_signature(intent(side="sell"))
    assert duplicate_signature(limit_order("1")) != duplicate_signature(limit_order("2"))


@given(
    st.integers(-1000, 1000),
    st.integers(0, 1000),
    st.integers(0, 1000),
)
def test_worst_case_exposure_bounds_every_way_the_open_orders_can_fill(
    position: int, open_buy: int, open_sell: int
) -> None:
    worst = worst_case_exposure(Decimal(position), Decimal(open_buy), Decimal(open_sell))
    outcomes = [position + b - s for b in (0, open_buy) for s in (0, open_sell)]
    assert worst == max(abs(o) for o in outcomes)
