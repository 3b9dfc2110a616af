"""How orders, positions and problems look on the wire (JSON), independent of HTTP plumbing.

The order service renders its answer once and stores those exact bytes, so an idempotent
retry gets the same answer byte for byte.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, PlainSerializer

from app.domain.decimals import ExactDecimal, render
from app.domain.errors import GatewayError
from app.domain.executions import Execution, ExecutionEvent
from app.domain.orders import Order, OrderType, Position, Side, TimeInForce
from app.domain.status import OrderStatus

PROBLEM_JSON = "application/problem+json"


def render_time(at: datetime) -> str:
    """Every timestamp in UTC at microsecond precision, always six digits (a whole second
    included), so that two of them compare as text as they do as times."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


Timestamp = Annotated[datetime, PlainSerializer(render_time, return_type=str, when_used="json")]


class OrderView(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    client_order_id: str
    account: str
    symbol: str
    side: Side
    qty: ExactDecimal
    type: OrderType
    limit_price: ExactDecimal | None
    time_in_force: TimeInForce
    status: OrderStatus
    filled_qty: ExactDecimal
    avg_fill_price: ExactDecimal | None
    created_at: Timestamp
    updated_at: Timestamp
    reject_reason: str | None

    @classmethod
    def of(cls, order: Order) -> OrderView:
        return cls(
            id=order.id,
            client_order_id=order.client_order_id,
            account=order.account,
            symbol=order.symbol,
            side=order.side,
            qty=order.qty,
            type=order.type,
            limit_price=order.limit_price,
            time_in_force=order.time_in_force,
            status=order.status,
            filled_qty=order.filled_qty,
            avg_fill_price=order.avg_fill_price,
            created_at=order.created_at,
            updated_at=order.updated_at,
            reject_reason=order.reject_reason,
        )


class ExecutionView(BaseModel):
    """An execution report (``execution_document`` renders it; this documents it)."""

    type: Literal["execution"]
    account: str
    seq: int
    exec_id: str
    event: ExecutionEvent
    order: OrderView
    last_qty: ExactDecimal | None
    last_price: ExactDecimal | None
    cum_qty: ExactDecimal
    leaves_qty: ExactDecimal
    avg_price: ExactDecimal | None
    position_qty: ExactDecimal | None
    reason: str | None
    ts: Timestamp


class ExecutionPage(BaseModel):
    items: list[ExecutionView]
    next_since: int  # the seq to ask after next


class OrderPage(BaseModel):
    items: list[OrderView]
    next_cursor: str | None


class PositionView(BaseModel):
    symbol: str
    qty: ExactDecimal
    avg_price: ExactDecimal
    realized_pnl: ExactDecimal

    @classmethod
    def of(cls, position: Position) -> PositionView:
        return cls(
            symbol=position.symbol,
            qty=position.qty,
            avg_price=position.avg_price,
            realized_pnl=position.realized_pnl,
        )


class Problem(BaseModel):
    """RFC 9457 problem details, with a stable machine-readable `code`."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    code: str
    detail: str


def render_order(order: Order) -> str:
    """``OrderView.of(order).model_dump_json()``, byte for byte, at a third of its cost
    (the answer to every order entry): no validation of values the order already holds."""
    return orjson.dumps(order_document(order), option=orjson.OPT_UTC_Z).decode()


def order_document(order: Order) -> dict[str, Any]:
    """The order as ``OrderView`` shows it, as plain JSON values."""
    return {
        "id": order.id,
        "client_order_id": order.client_order_id,
        "account": order.account,
        "symbol": order.symbol,
        "side": order.side.value,
        "qty": render(order.qty),
        "type": order.type.value,
        "limit_price": None if order.limit_price is None else render(order.limit_price),
        "time_in_force": order.time_in_force.value,
        "status": order.status.value,
        "filled_qty": render(order.filled_qty),
        "avg_fill_price": (None if order.avg_fill_price is None else render(order.avg_fill_price)),
        "created_at": render_time(order.created_at),
        "updated_at": render_time(order.updated_at),
        "reject_reason": order.reject_reason,
    }


def _decimal(value: Decimal | None) -> str | None:
    return None if value is None else render(value)


def execution_document(execution: Execution) -> dict[str, Any]:
    """An execution report on the wire: the ``executions`` channel's frame."""
    order = execution.order
    return {
        "type": "execution",
        "account": execution.account,
        "seq": execution.seq,
        "exec_id": execution.exec_id,
        "event": execution.event.value,
        "order": order_document(order),
        "last_qty": _decimal(execution.last_qty),
        "last_price": _decimal(execution.last_price),
        "cum_qty": render(order.filled_qty),
        "leaves_qty": render(execution.leaves_qty),
        "avg_price": _decimal(order.avg_fill_price),
        "position_qty": _decimal(execution.position_qty),
        "reason": execution.reason,
        "ts": render_time(execution.at),
    }


def render_execution(execution: Execution) -> str:
    return orjson.dumps(execution_document(execution)).decode()


def problem_body(error: GatewayError, **extra: Any) -> dict[str, Any]:
    """RFC 9457's members, then the error's own, which never replace them (``status`` is
    the HTTP status, never an order's: that is ``order_status``)."""
    body: dict[str, Any] = {
        "type": f"https://ordergate.dev/problems/{error.code}",
        "title": error.title,
        "status": error.status,
        "code": error.code,
        "detail": error.detail,
    }
    for name, value in {**error.extra, **extra}.items():
        body.setdefault(name, value)
    return body


def render_problem(error: GatewayError, **extra: Any) -> str:
    return orjson.dumps(problem_body(error, **extra), default=str).decode()
