"""Applying one of the broker's execution reports to an order: the trading rules, no I/O.

A report is applied once: one whose sequence number the order has already seen is a replay
and changes nothing. A fill adds to the order's filled quantity and average price (once per
execution id: the caller says whether the id is already known). The order takes the
report's status if the state machine allows that move from where it is; otherwise (a stale
report: the broker's 'new' after we asked to cancel, a fill of an order already canceled)
it keeps its status and takes only the fill. Its ``updated_at`` never goes back: the
broker stamps reports with its own clock, to the millisecond, and a fill may be stamped
before the acknowledgement the gateway recorded.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

from app.domain.orders import ExecutionReport, Order
from app.domain.status import OrderStatus, report_can_move

PRICE_QUANTUM = Decimal("1e-8")


class Fill(NamedTuple):
    """A fill the report brought: this much, at this price, at this time."""

    qty: Decimal
    price: Decimal
    at: datetime


class ReportOutcome(NamedTuple):
    """The order after the report, and what it brought. ``moved``: the order's status
    changed or it filled, which the order's story (its events) records."""

    order: Order
    fill: Fill | None
    moved: bool


def apply_report(
    order: Order, report: ExecutionReport, *, fill_known: bool, now: datetime
) -> ReportOutcome | None:
    """``order`` after ``report``; None if the report was applied before (a replay).
    ``fill_known``: the report's execution id is already recorded as a fill; ``now``: the
    time to stamp a report that carries none."""
    if report.seq <= order.exec_seq:
        return None
    at = report.transact_time or now
    changes: dict[str, Any] = {"exec_seq": report.seq}
    fill = None
    if report.is_fill and not fill_known:
        if report.last_px is None:
            raise ValueError(f"fill {report.exec_id} without a price")
        fill = Fill(report.last_qty, report.last_px, at)
        cost = (order.avg_fill_price or Decimal(0)) * order.filled_qty
        filled = order.filled_qty + report.last_qty
        changes["filled_qty"] = filled
        changes["avg_fill_price"] = ((cost + fill.price * fill.qty) / filled).quantize(
            PRICE_QUANTUM
        )
    updated_at = max(at, order.updated_at)
    if report.status == order.status or not report_can_move(order.status, report.status):
        updated = order._replace(updated_at=updated_at, **changes)
    else:
        if report.status is OrderStatus.REJECTED:
            changes["reject_reason"] = report.reason or "broker.rejected"
        updated = order.transition(report.status, updated_at, **changes)
    return ReportOutcome(updated, fill, updated.status != order.status or fill is not None)
