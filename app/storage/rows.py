"""Mapping between domain orders and ``orders`` table rows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.domain.orders import Order, OrderType, Side, TimeInForce
from app.domain.status import OrderStatus


def order_from_row(row: Mapping[Any, Any]) -> Order:
    return Order(
        id=row["id"],
        client_order_id=row["client_order_id"],
        account=row["account"],
        symbol=row["symbol"],
        side=Side(row["side"]),
        qty=row["qty"],
        type=OrderType(row["type"]),
        limit_price=row["limit_price"],
        time_in_force=TimeInForce(row["time_in_force"]),
        status=OrderStatus(row["status"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        filled_qty=row["filled_qty"],
        avg_fill_price=row["avg_fill_price"],
        reject_reason=row["reject_reason"],
        request_hash=row["request_hash"],
        exec_seq=row["exec_seq"],
    )
