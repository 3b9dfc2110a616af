"""Applying the broker's execution reports to an order (app/domain/reports.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from app.domain.orders import ExecutionReport, Order, OrderType, Side, TimeInForce
from app.domain.reports import apply_report
from app.domain.status import OrderStatus

T0 = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)


def order(status: OrderStatus = OrderStatus.NEW, **changes: object) -> Order:
    placed = Order(
        id="o-1",
        client_order_id="c-1",
        account="acct",
        symbol="AAPL",
        side=Side.BUY,
        qty=Decimal(100),
        type=OrderType.LIMIT,
        limit_price=Decimal("10"),
        time_in_force=TimeInForce.DAY,
        status=status,
        created_at=T0,
        updated_at=T0 + timedelta(seconds=1),
    )
    return placed._replace(**changes)  # type: ignore[arg-type]


def report(
    seq: int, status: OrderStatus, last: str = "0", px: str | None = None, at_s: float = 2
) -> ExecutionReport:
    return ExecutionReport(
        client_order_id="c-1",
        exec_id=f"x-{seq}",
        seq=seq,
        status=status,
        cum_qty=Decimal(0),
        last_qty=Decimal(last),
        last_px=None if px is None else Decimal(px),
        reason="broker.said_so",
        account="acct",
        symbol="AAPL",
        side=Side.BUY,
        transact_time=T0 + timedelta(seconds=at_s),
    )


def test_a_fill_adds_to_the_filled_quantity_and_the_average_price() -> None:
    first = apply_report(
        order(), report(1, OrderStatus.PARTIALLY_FILLED, "40", "10"), fill_known=False, now=NOW
    )
    assert first is not None
    second = apply_report(
        first.order, report(2, OrderStatus.FILLED, "60", "11"), fill_known=False, now=NOW
    )
    assert second is not None
    assert (second.order.status, second.order.filled_qty) == (OrderStatus.FILLED, 100)
    assert second.order.avg_fill_price == Decimal("10.6")
    assert second.fill is not None
    assert (second.fill.qty, second.fill.price, second.moved) == (60, 11, True)


def test_a_replay_changes_nothing_and_a_known_fill_is_not_counted_again() -> None:
    filled = apply_report(
        order(), report(1, OrderStatus.PARTIALLY_FILLED, "40", "10"), fill_known=False, now=NOW
    )
    assert filled is not None
    again = report(1, OrderStatus.PARTIALLY_FILLED, "40", "10")
    assert apply_report(filled.order, again, fill_known=True, now=NOW) is None
    # A new sequence number for an execution already recorded: the status moves, no fill.
    recorded = apply_report(
        order(), report(5, OrderStatus.PARTIALLY_FILLED, "40", "10"), fill_known=True, now=NOW
    )
    assert recorded is not None
    assert (recorded.order.filled_qty, recorded.fill, recorded.moved) == (0, None, True)


def test_a_stale_report_keeps_the_status_and_only_brings_its_fill() -> None:
    canceling = order(OrderStatus.PENDING_CANCEL)
    stale = apply_report(canceling, report(1, OrderStatus.NEW), fill_known=False, now=NOW)
    assert stale is not None
    assert (stale.order.status, stale.moved) == (OrderStatus.PENDING_CANCEL, False)
    canceled = order(OrderStatus.CANCELED)
    late_fill = report(2, OrderStatus.PARTIALLY_FILLED, "10", "10")
    kept = apply_report(canceled, late_fill, fill_known=False, now=NOW)
    assert kept is not None
    assert (kept.order.status, kept.order.filled_qty, kept.moved) == (
        OrderStatus.CANCELED,
        10,
        True,
    )


def test_a_rejection_carries_its_reason() -> None:
    rejected = apply_report(
        order(OrderStatus.PENDING_NEW), report(1, OrderStatus.REJECTED), fill_known=False, now=NOW
    )
    assert rejected is not None
    assert (rejected.order.status, rejected.order.reject_reason) == (
        OrderStatus.REJECTED,
        "broker.said_so",
    )


statuses = st.sampled_from(list(OrderStatus))


@given(
    steps=st.lists(
        st.tuples(statuses, st.integers(0, 30), st.floats(0, 10, allow_nan=False)), max_size=12
    )
)
def test_reports_in_sequence_count_each_fill_once_and_time_never_goes_back(
    steps: list[tuple[OrderStatus, int, float]],
) -> None:
    current = order(OrderStatus.PENDING_NEW)
    filled = Decimal(0)
    for seq, (status, last, at_s) in enumerate(steps, start=1):
        incoming = report(seq, status, str(last), "10" if last else None, at_s)
        outcome = apply_report(current, incoming, fill_known=False, now=NOW)
        assert outcome is not None
        assert outcome.order.updated_at >= current.updated_at
        assert apply_report(outcome.order, incoming, fill_known=False, now=NOW) is None
        filled += incoming.last_qty
        current = outcome.order
        assert current.filled_qty == filled
