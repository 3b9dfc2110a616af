"""The rows the order log reads and writes by name, and the mapping between domain orders
and ``orders`` rows. Each row type's fields are its statement's columns, in order (the
statements take their column lists from here), so a row is never read by position."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from app.domain.orders import Order, OrderType, Side, TimeInForce
from app.domain.status import OrderStatus
from app.storage.sql.tables import decimal_from_db, utc_from_db


class OrderRow(NamedTuple):
    """An ``orders`` row as the driver gives it (values not yet converted)."""

    id: Any
    account: Any
    client_order_id: Any
    symbol: Any
    side: Any
    qty: Any
    type: Any
    limit_price: Any
    time_in_force: Any
    status: Any
    filled_qty: Any
    avg_fill_price: Any
    reject_reason: Any
    request_hash: Any
    exec_seq: Any
    created_at: Any
    updated_at: Any


class PositionRow(NamedTuple):
    account: Any
    symbol: Any
    qty: Any
    avg_price: Any
    realized_pnl: Any
    updated_at: Any


class FillRow(NamedTuple):
    exec_id: Any
    order_id: Any
    account: Any
    symbol: Any
    side: Any
    qty: Any
    price: Any
    at: Any


class EventRow(NamedTuple):
    """An ``order_events`` row; ``seq`` is None until the event is numbered (``executions``)."""

    order_id: Any
    account: Any
    from_status: Any
    to_status: Any
    reason: Any
    exec_id: Any
    at: Any
    seq: Any
    cum_qty: Any
    avg_price: Any
    position_qty: Any


class FillStateRow(NamedTuple):
    """What a batch of reports changes of an order (``id`` last: the statement's key)."""

    status: Any
    filled_qty: Any
    avg_fill_price: Any
    exec_seq: Any
    reject_reason: Any
    updated_at: Any
    id: Any


def order_from_row(row: Mapping[Any, Any]) -> Order:
    """An order from a SQLAlchemy row mapping (values already converted by the columns)."""
    return order_from_values(OrderRow._make(row[column] for column in OrderRow._fields))


def order_from_values(row: OrderRow) -> Order:
    """An order from an ``orders`` row: the driver's raw values (converted here as the
    columns' SQLAlchemy types would convert them) or already converted ones."""
    return Order(
        id=row.id,
        client_order_id=row.client_order_id,
        account=row.account,
        symbol=row.symbol,
        side=Side(row.side),
        qty=decimal_from_db(row.qty),
        type=OrderType(row.type),
        limit_price=decimal_from_db(row.limit_price),
        time_in_force=TimeInForce(row.time_in_force),
        status=OrderStatus(row.status),
        created_at=utc_from_db(row.created_at),
        updated_at=utc_from_db(row.updated_at),
        filled_qty=decimal_from_db(row.filled_qty),
        avg_fill_price=decimal_from_db(row.avg_fill_price),
        reject_reason=row.reject_reason,
        request_hash=row.request_hash,
        exec_seq=row.exec_seq,
    )


def order_values(o: Order) -> tuple[Any, ...]:
    """An order as the values of its ``orders`` row, in ``OrderRow``'s order."""
    return (
        o.id,
        o.account,
        o.client_order_id,
        o.symbol,
        o.side.value,
        o.qty,
        o.type.value,
        o.limit_price,
        o.time_in_force.value,
        o.status.value,
        o.filled_qty,
        o.avg_fill_price,
        o.reject_reason,
        o.request_hash,
        o.exec_seq,
        o.created_at,
        o.updated_at,
    )
