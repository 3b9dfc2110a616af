"""Execution reports as subscribers see them: one per order event, numbered per account.

Every transition of an order and every fill is a report. ``seq`` counts an account's
reports 1, 2, 3, ... in the order the order log committed them, with no gap, so a
subscriber can tell a missed report from a quiet account and resume after the last it has.

A report is a function of the stored event and the order's own row (``Execution.of``), so
one rebuilt from the order log is the report that was streamed live, byte for byte. Its
vocabulary follows Alpaca's ``trade_updates`` (event, execution id, the order, price, qty,
position_qty, timestamp) and FIX's execution types (``restated``).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import NamedTuple

from app.domain.orders import Order
from app.domain.status import OrderStatus

# Report numbers are 64-bit signed integers in the order log.
MAX_SEQ = 2**63 - 1


class ExecutionEvent(StrEnum):
    PENDING_NEW = "pending_new"
    NEW = "new"
    PARTIAL_FILL = "partial_fill"
    FILL = "fill"
    PENDING_CANCEL = "pending_cancel"
    CANCELED = "canceled"
    REJECTED = "rejected"
    DENIED = "denied"
    EXPIRED = "expired"
    UNKNOWN = "unknown"
    RESTATED = "restated"  # reconciliation learned the order's state from the broker


_EVENT_OF_STATUS = {
    OrderStatus.PENDING_NEW: ExecutionEvent.PENDING_NEW,
    OrderStatus.NEW: ExecutionEvent.NEW,
    OrderStatus.PARTIALLY_FILLED: ExecutionEvent.PARTIAL_FILL,
    OrderStatus.FILLED: ExecutionEvent.FILL,
    OrderStatus.PENDING_CANCEL: ExecutionEvent.PENDING_CANCEL,
    OrderStatus.CANCELED: ExecutionEvent.CANCELED,
    OrderStatus.REJECTED: ExecutionEvent.REJECTED,
    OrderStatus.DENIED: ExecutionEvent.DENIED,
    OrderStatus.EXPIRED: ExecutionEvent.EXPIRED,
    OrderStatus.UNKNOWN: ExecutionEvent.UNKNOWN,
}
# The statuses whose order row keeps the reason it was refused (both are final).
_REFUSED = frozenset({OrderStatus.REJECTED, OrderStatus.DENIED})


def event_of(
    from_status: OrderStatus | None, to_status: OrderStatus, filled: bool
) -> ExecutionEvent:
    """What an order event is, to a subscriber: a fill by what is left of the order (a fill
    that arrives while a cancel is pending is a partial fill unless it completes the
    order); a move out of ``unknown`` without a fill is a restatement."""
    if filled:
        return (
            ExecutionEvent.FILL if to_status is OrderStatus.FILLED else ExecutionEvent.PARTIAL_FILL
        )
    if from_status is OrderStatus.UNKNOWN:
        return ExecutionEvent.RESTATED
    return _EVENT_OF_STATUS[to_status]


class Execution(NamedTuple):
    """One execution report. ``order``: the order as it was right after the event."""

    account: str
    seq: int
    exec_id: str
    event: ExecutionEvent
    order: Order
    last_qty: Decimal | None  # this fill's, on fills only
    last_price: Decimal | None
    position_qty: Decimal | None  # the account's position in the symbol after this fill
    reason: str | None
    at: datetime

    @classmethod
    def of(
        cls,
        order: Order,
        *,
        seq: int,
        from_status: OrderStatus | None,
        to_status: OrderStatus,
        reason: str | None,
        exec_id: str | None,
        at: datetime,
        cum_qty: Decimal | None,
        avg_price: Decimal | None,
        position_qty: Decimal | None,
        last_qty: Decimal | None,
        last_price: Decimal | None,
    ) -> Execution:
        """The report of an order event; ``order`` may be the order at any later point (only
        what never changes is taken from it, and its refusal reason once refused)."""
        snapshot = order._replace(
            status=to_status,
            filled_qty=order.filled_qty if cum_qty is None else cum_qty,
            avg_fill_price=avg_price,
            updated_at=at,
            reject_reason=order.reject_reason if to_status in _REFUSED else None,
        )
        filled = last_qty is not None and last_qty > 0
        return cls(
            account=order.account,
            seq=seq,
            # The gateway's own transitions have no broker execution id: one of its own,
            # unique and the same however often the report is rebuilt.
            exec_id=exec_id or f"{order.id}-{seq}",
            event=event_of(from_status, to_status, filled),
            order=snapshot,
            last_qty=last_qty if filled else None,
            last_price=last_price if filled else None,
            position_qty=position_qty if filled else None,
            reason=reason,
            at=at,
        )

    @property
    def leaves_qty(self) -> Decimal:
        """What is still working: nothing once the order is final."""
        if self.order.status.is_final:
            return Decimal(0)
        return self.order.qty - self.order.filled_qty
