"""Mapping between domain orders and ``orders`` table rows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.domain.orders import Order, OrderType, Side, TimeInForce
from app.domain.status import OrderStatus


def order_to_row(order: Order) -> dict[str, Any]:
    return {
        "id": order.id,
        "account": order.account,
        "client_order_id": order.client_order_id,
        "symbol": order.symbol,
        "side": order.side.value,
        "qty": order.qty,
        "type": order.type.value,
        "limit_price": order.limit_price,
        "time_in_force": order.time_in_force.value,
        "status": order.status.value,
        "filled_qty": order.filled_qty,
        "avg_fill_price": order.avg_fill_price,
        "reject_reason": order.reject_reason,
        "request_hash": order.request_hash,
        "exec_seq": order.exec_seq,
        "created_at": order.created_at,
        "updated_at": order.updated_at,
    }


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
