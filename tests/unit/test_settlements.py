"""Which execution reports the applier passes on to the risk state."""

from __future__ import annotations

from decimal import Decimal

from app.domain.exposure import Settlement
from app.domain.orders import ExecutionReport, Side
from app.domain.status import OrderStatus
from app.services.executions import risk_settlements


def report(seq: int, status: OrderStatus, cum: str, last: str = "0") -> ExecutionReport:
    return ExecutionReport(
        client_order_id="c-1",
        exec_id=f"x-{seq}",
        seq=seq,
        status=status,
        cum_qty=Decimal(cum),
        last_qty=Decimal(last),
        last_px=Decimal("10") if last != "0" else None,
        account="acct",
        symbol="AAPL",
        side=Side.BUY,
    )


def test_fills_and_ends_reach_the_risk_state_and_nothing_else_does() -> None:
    reports = [
        report(1, OrderStatus.NEW, "0"),  # cannot change a reservation: not sent
        report(2, OrderStatus.PARTIALLY_FILLED, "2", last="2"),
        report(3, OrderStatus.PENDING_CANCEL, "2"),  # neither a fill nor an end: not sent
        report(4, OrderStatus.CANCELED, "2"),
    ]
    assert risk_settlements(reports) == [
        Settlement("acct", "c-1", Decimal(2), False, Decimal(10)),
        Settlement("acct", "c-1", Decimal(2), True, None),
    ]


def test_a_reject_without_fills_still_releases_the_reservation() -> None:
    assert risk_settlements([report(1, OrderStatus.REJECTED, "0")]) == [
        Settlement("acct", "c-1", Decimal(0), True, None)
    ]
