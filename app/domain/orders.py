"""Order intents, orders and execution reports: the gateway's vocabulary, free of I/O."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, NamedTuple, Self

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from app.domain.decimals import ExactDecimal
from app.domain.status import OrderStatus, check_transition

# Exact decimals only: bounded magnitude and scale so no input can overflow a NUMERIC column,
# and so the paper exchange can hold quantities as scaled integers.
QTY_DECIMALS = 6
PRICE_DECIMALS = 6
MAX_QTY = Decimal("1000000000")
MAX_PRICE = Decimal("1000000000")

Quantity = Annotated[
    ExactDecimal,
    Field(gt=0, le=MAX_QTY, decimal_places=QTY_DECIMALS, allow_inf_nan=False),
]
Price = Annotated[
    ExactDecimal,
    Field(gt=0, le=MAX_PRICE, decimal_places=PRICE_DECIMALS, allow_inf_nan=False),
]
SYMBOL_PATTERN = r"^[A-Z][A-Z0-9.\-]{0,15}$"
Symbol = Annotated[str, Field(pattern=SYMBOL_PATTERN, examples=["AAPL"])]
# Also the Idempotency-Key header's form: a key given there becomes the client_order_id.
CLIENT_ORDER_ID_PATTERN = r"^[A-Za-z0-9._:\-]{1,64}$"
ClientOrderId = Annotated[str, Field(pattern=CLIENT_ORDER_ID_PATTERN)]


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"


class TimeInForce(StrEnum):
    DAY = "day"
    GTC = "gtc"
    IOC = "ioc"
    FOK = "fok"


class OrderReason(StrEnum):
    """Why the gateway itself, not a report of the broker's, moved an order (in
    ``order_events.reason``, and ``reject_reason`` for a rejection)."""

    # The broker never received the placement (reconciliation asked it).
    NOT_RECEIVED = "broker.not_received"
    # The broker no longer knows an order it acknowledged: lost with the venue's state.
    ORDER_LOST = "broker.order_lost"


class OrderIntent(BaseModel):
    """What a strategy or a person asks for. Validated fully before any side effect."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    symbol: Symbol
    side: Side
    qty: Quantity
    type: OrderType = OrderType.MARKET
    limit_price: Price | None = None
    time_in_force: TimeInForce = TimeInForce.DAY
    client_order_id: ClientOrderId | None = None
    # The same symbol, side, qty and price again within the duplicate window is refused
    # as an accident unless the sender says it means it.
    allow_duplicate: StrictBool = False

    @model_validator(mode="after")
    def _price_matches_type(self) -> Self:
        if self.type is OrderType.LIMIT and self.limit_price is None:
            raise ValueError("a limit order needs limit_price")
        if self.type is OrderType.MARKET and self.limit_price is not None:
            raise ValueError("a market order must not carry limit_price")
        return self

    def fingerprint(self) -> str:
        """Content hash of the order, independent of JSON key order and decimal spelling,
        and of where its key travelled: the client_order_id in the body and the
        Idempotency-Key header name the same order, so neither is part of it."""
        price = "" if self.limit_price is None else _canonical(self.limit_price)
        text = "|".join(
            (
                self.symbol,
                self.side.value,
                _canonical(self.qty),
                self.type.value,
                price,
                self.time_in_force.value,
                *(("allow_duplicate",) if self.allow_duplicate else ()),
            )
        )
        return hashlib.sha256(text.encode()).hexdigest()


def _canonical(value: Decimal) -> str:
    return f"{value.normalize():f}"


class Order(NamedTuple):
    """An order as the gateway records it. Immutable: every change is a new value.

    A NamedTuple rather than a frozen dataclass: each order is built and moved several
    times on its way (the gateway, then the applier per report), and a frozen dataclass's
    ``__init__`` sets each field through ``object.__setattr__``, several times the cost
    (docs/performance.md)."""

    id: str
    client_order_id: str
    account: str
    symbol: str
    side: Side
    qty: Decimal
    type: OrderType
    limit_price: Decimal | None
    time_in_force: TimeInForce
    status: OrderStatus
    created_at: datetime
    updated_at: datetime
    filled_qty: Decimal = Decimal(0)
    avg_fill_price: Decimal | None = None
    reject_reason: str | None = None
    request_hash: str = ""
    # Highest broker execution sequence applied, so replays and reorderings are harmless.
    exec_seq: int = 0

    def transition(self, status: OrderStatus, at: datetime, **changes: object) -> Order:
        """Return the order in ``status``; raises ``InvalidTransition`` if that is illegal."""
        check_transition(self.status, status)
        return self._replace(status=status, updated_at=at, **changes)  # type: ignore[arg-type]


class ExecutionReport(NamedTuple):
    """One event from the broker about one order (after FIX 35=8: cumulative, sequenced).
    A NamedTuple, as ``Order`` is: the applier builds one per report."""

    client_order_id: str
    exec_id: str
    seq: int
    status: OrderStatus
    cum_qty: Decimal
    last_qty: Decimal = Decimal(0)
    last_px: Decimal | None = None
    reason: str | None = None
    account: str = ""
    symbol: str = ""
    side: Side | None = None
    transact_time: datetime | None = None

    @property
    def is_fill(self) -> bool:
        return self.last_qty > 0


@dataclass(frozen=True, slots=True)
class Position:
    account: str
    symbol: str
    qty: Decimal
    avg_price: Decimal
    realized_pnl: Decimal


def apply_fill_to_position(
    position: Position, side: Side, qty: Decimal, price: Decimal, price_places: int = 8
) -> Position:
    """Average-cost position accounting: adds average in, reductions realise P&L, flips reset."""
    signed = qty if side is Side.BUY else -qty
    old = position.qty
    new = old + signed
    quantum = Decimal(1).scaleb(-price_places)
    realized = position.realized_pnl
    if old == 0 or (old > 0) == (signed > 0):
        avg = ((position.avg_price * abs(old)) + price * qty) / abs(new)
    else:
        closed = min(abs(old), qty)
        direction = 1 if old > 0 else -1
        realized += (price - position.avg_price) * closed * direction
        if new == 0:
            avg = Decimal(0)
        elif (new > 0) == (old > 0):
            avg = position.avg_price
        else:
            avg = price
    return replace(
        position, qty=new, avg_price=avg.quantize(quantum), realized_pnl=realized.quantize(quantum)
    )
