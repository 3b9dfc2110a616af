"""Mapping between domain orders and ``orders`` table rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from app.domain.orders import Order, OrderType, Side, TimeInForce
from app.domain.status import OrderStatus
from app.storage.sql.statements import ORDER_COLUMNS
from app.storage.sql.tables import decimal_from_db, utc_from_db


def order_from_row(row: Mapping[Any, Any]) -> Order:
    """An order from a SQLAlchemy row mapping (values already converted by the columns)."""
    return order_from_values([row[column] for column in ORDER_COLUMNS])


def order_from_values(values: Sequence[Any]) -> Order:
    """An order from a row of ``ORDER_COLUMNS``: the driver's raw values (converted here as
    the columns' SQLAlchemy types would convert them) or already converted ones."""
    (
        id_,
        account,
        client_order_id,
        symbol,
        side,
        qty,
        type_,
        limit_price,
        time_in_force,
        status,
        filled_qty,
        avg_fill_price,
        reject_reason,
        request_hash,
        exec_seq,
        created_at,
        updated_at,
    ) = values
    return Order(
        id=id_,
        client_order_id=client_order_id,
        account=account,
        symbol=symbol,
        side=Side(side),
        qty=decimal_from_db(qty),
        type=OrderType(type_),
        limit_price=decimal_from_db(limit_price),
        time_in_force=TimeInForce(time_in_force),
        status=OrderStatus(status),
        created_at=utc_from_db(created_at),
        updated_at=utc_from_db(updated_at),
        filled_qty=decimal_from_db(filled_qty),
        avg_fill_price=decimal_from_db(avg_fill_price),
        reject_reason=reject_reason,
        request_hash=request_hash,
        exec_seq=exec_seq,
    )
