"""Pre-trade risk: limits, reason codes and the checks that need no shared state.

The stateful checks (position, gross notional, open orders, duplicates, kill switch, reduce
only) are decided atomically against live exposure in Redis (``storage/lua/risk_reserve.lua``);
this module holds what can be decided from an intent, the account's limits and a reference
price alone, plus the arithmetic both sides agree on.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, NamedTuple

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from app.domain.decimals import ExactDecimal
from app.domain.errors import RiskDenied
from app.domain.orders import MAX_PRICE, MAX_QTY, OrderIntent, OrderType, Side, Symbol

# Exposure limits are bounded like the values they limit, so no input can overflow.
LimitQty = Annotated[ExactDecimal, Field(ge=0, le=MAX_QTY, decimal_places=6, allow_inf_nan=False)]
LimitNotional = Annotated[
    ExactDecimal, Field(ge=0, le=MAX_QTY * MAX_PRICE, decimal_places=2, allow_inf_nan=False)
]
MAX_SYMBOL_LIST = 1000


def _not_a_boolean(value: object) -> object:
    # JSON true is not 1 here (pydantic's lax mode would take it as one).
    if isinstance(value, bool):
        raise ValueError("a whole number is expected, not a boolean")
    return value


Count = Annotated[int, BeforeValidator(_not_a_boolean)]


class TradingState(StrEnum):
    ACTIVE = "active"
    REDUCE_ONLY = "reduce_only"  # only orders that shrink a position get through
    HALTED = "halted"  # nothing gets through


class SymbolLimits(BaseModel):
    """Per-symbol overrides of the account's limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_order_qty: LimitQty | None = None
    max_position: LimitQty | None = None


class RiskLimits(BaseModel):
    """An account's pre-trade limits. An absent or null limit means no limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_order_qty: LimitQty | None = None
    max_order_notional: LimitNotional | None = None
    max_position: LimitQty | None = None
    max_gross_notional: LimitNotional | None = None
    max_open_orders: Annotated[Count, Field(ge=0, le=1_000_000)] | None = None
    price_collar_pct: (
        Annotated[ExactDecimal, Field(gt=0, le=1000, decimal_places=4, allow_inf_nan=False)] | None
    ) = None
    duplicate_window_ms: Annotated[Count, Field(ge=0, le=86_400_000)] | None = None
    allowed_symbols: Annotated[list[Symbol], Field(max_length=MAX_SYMBOL_LIST)] | None = None
    blocked_symbols: Annotated[list[Symbol], Field(max_length=MAX_SYMBOL_LIST)] | None = None
    trading_state: TradingState = TradingState.ACTIVE
    symbols: Annotated[dict[Symbol, SymbolLimits], Field(max_length=MAX_SYMBOL_LIST)] = Field(
        default_factory=dict
    )

    @field_validator("trading_state", mode="before")
    @classmethod
    def _null_state_is_active(cls, value: object) -> object:
        # "null means no limit": a null trading state is an unrestricted one.
        return TradingState.ACTIVE if value is None else value

    def order_qty_limit(self, symbol: str) -> Decimal | None:
        override = self.symbols.get(symbol)
        if override is not None and override.max_order_qty is not None:
            return override.max_order_qty
        return self.max_order_qty

    def position_limit(self, symbol: str) -> Decimal | None:
        override = self.symbols.get(symbol)
        if override is not None and override.max_position is not None:
            return override.max_position
        return self.max_position


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch: an object's members replace or (null) remove the target's,
    recursively; anything else replaces the target whole."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = merge_patch(merged.get(name), value)
    return merged


def patched_limits(current: RiskLimits, patch: dict[str, Any]) -> RiskLimits:
    """``current`` with only the fields ``patch`` names changed (null: no limit; in
    ``symbols``, null removes a symbol's override). Raises ``ValueError`` (a pydantic
    ``ValidationError``) if the result is not valid limits."""
    return RiskLimits.model_validate(merge_patch(current.model_dump(mode="json"), patch))


class Reserved(StrEnum):
    """An accepted order's reservation: made now, or already held under its id (a retry of
    an order whose reservation stands: nothing new was reserved)."""

    NOW = "now"
    ALREADY = "already"


class RiskDecision(NamedTuple):
    """What the pre-trade checks decided: the reservation when accepted, the denial when
    not, and whether the order's idempotency key was claimed on the way."""

    reserved: Reserved | None
    denial: RiskDenied | None
    key_claimed: bool


class RiskCode(StrEnum):
    """Stable reason codes, one per check."""

    SYMBOL_NOT_ALLOWED = "risk.symbol_not_allowed"
    SYMBOL_BLOCKED = "risk.symbol_blocked"
    MAX_ORDER_QTY = "risk.max_order_qty"
    MAX_ORDER_NOTIONAL = "risk.max_order_notional"
    PRICE_COLLAR = "risk.price_collar"
    NO_REFERENCE_PRICE = "risk.no_reference_price"
    POSITION_LIMIT = "risk.position_limit"
    GROSS_NOTIONAL = "risk.gross_notional_limit"
    MAX_OPEN_ORDERS = "risk.max_open_orders"
    DUPLICATE_ORDER = "risk.duplicate_order"
    KILL_SWITCH = "risk.kill_switch"
    TRADING_HALTED = "risk.trading_halted"
    REDUCE_ONLY = "risk.reduce_only"


def check_static(
    intent: OrderIntent, limits: RiskLimits, reference_price: Decimal | None
) -> Decimal:
    """The checks that need no shared state. Returns the price the order's exposure is
    counted at (its limit price, else the reference price); raises ``RiskDenied``."""
    symbol = intent.symbol
    if limits.trading_state is TradingState.HALTED:
        raise RiskDenied(RiskCode.TRADING_HALTED, "trading is halted for this account")
    if limits.allowed_symbols is not None and symbol not in limits.allowed_symbols:
        raise RiskDenied(RiskCode.SYMBOL_NOT_ALLOWED, f"{symbol} is not on the allow list")
    if limits.blocked_symbols is not None and symbol in limits.blocked_symbols:
        raise RiskDenied(RiskCode.SYMBOL_BLOCKED, f"{symbol} is on the block list")
    max_qty = limits.order_qty_limit(symbol)
    if max_qty is not None and intent.qty > max_qty:
        raise RiskDenied(RiskCode.MAX_ORDER_QTY, f"qty {intent.qty} exceeds {max_qty}")

    if intent.type is OrderType.MARKET:
        if reference_price is None:
            raise RiskDenied(
                RiskCode.NO_REFERENCE_PRICE, f"no reference price for {symbol}: market order"
            )
        price = reference_price
    else:
        assert intent.limit_price is not None  # the intent's own validator holds this
        price = intent.limit_price
        collar = limits.price_collar_pct
        if collar is not None:
            if reference_price is None:
                raise RiskDenied(
                    RiskCode.NO_REFERENCE_PRICE, f"no reference price for {symbol}: no collar"
                )
            distance = abs(price - reference_price) / reference_price * 100
            if distance > collar:
                raise RiskDenied(
                    RiskCode.PRICE_COLLAR,
                    f"limit {price} is {distance:.2f}% from the reference {reference_price}"
                    f" (collar {collar}%)",
                )

    notional = intent.qty * price
    if limits.max_order_notional is not None and notional > limits.max_order_notional:
        raise RiskDenied(
            RiskCode.MAX_ORDER_NOTIONAL,
            f"notional {notional:.2f} exceeds {limits.max_order_notional}",
        )
    return price


def duplicate_signature(intent: OrderIntent) -> str:
    """What makes two orders look like an accidental duplicate: symbol, side, qty, price."""
    price = "" if intent.limit_price is None else f"{intent.limit_price.normalize():f}"
    text = f"{intent.symbol}|{intent.side.value}|{intent.qty.normalize():f}|{price}"
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:20]


def worst_case_exposure(position: Decimal, open_buy: Decimal, open_sell: Decimal) -> Decimal:
    """Absolute position if every open order on one side filled: the larger of the two."""
    return max(abs(position + open_buy), abs(position - open_sell))


def signed(side: Side, qty: Decimal) -> Decimal:
    return qty if side is Side.BUY else -qty
