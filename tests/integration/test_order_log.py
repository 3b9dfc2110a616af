"""The order log against a real SQLite file: how broker reports meet the gateway's own
transitions when they race."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from app.bench.risk import create_database
from app.domain.orders import ExecutionReport, Order, OrderType, Side, TimeInForce
from app.domain.status import OrderStatus
from app.storage.database import create_writer_engine
from app.storage.order_log import OrderLog

NOW = datetime(2026, 11, 24, tzinfo=UTC)


@pytest.fixture
async def order_log(tmp_path: Path) -> AsyncIterator[OrderLog]:
    log = OrderLog(create_writer_engine(create_database(tmp_path / "log.db")), checkpoints=False)
    log.start()
    yield log
    await log.close()


def resting_buy() -> Order:
    return Order(
        id="01TESTORDER",
        client_order_id="c-1",
        account="acct",
        symbol="AAPL",
        side=Side.BUY,
        qty=Decimal(5),
        type=OrderType.LIMIT,
        limit_price=Decimal(1),
        time_in_force=TimeInForce.DAY,
        status=OrderStatus.PENDING_NEW,
        created_at=NOW,
        updated_at=NOW,
    )


async def test_a_late_acknowledgement_does_not_undo_a_cancel_in_progress(
    order_log: OrderLog,
) -> None:
    placed = resting_buy()
    assert await order_log.insert_new(placed)
    live = placed.transition(OrderStatus.NEW, NOW)
    assert await order_log.record_transition(live, OrderStatus.PENDING_NEW)
    canceling = live.transition(OrderStatus.PENDING_CANCEL, NOW)
    assert await order_log.record_transition(canceling, OrderStatus.NEW)

    # The broker's acknowledgement of the placement reaches the applier only now.
    ack = ExecutionReport(
        client_order_id="c-1",
        exec_id="x-1",
        seq=1,
        status=OrderStatus.NEW,
        cum_qty=Decimal(0),
        account="acct",
        symbol="AAPL",
        side=Side.BUY,
        transact_time=NOW,
    )
    [applied] = await order_log.apply_reports([ack])
    assert applied.order is not None
    assert applied.order.status is OrderStatus.PENDING_CANCEL

    # So the broker's cancel confirmation is still recorded.
    canceled = canceling.transition(OrderStatus.CANCELED, NOW)
    assert await order_log.record_transition(canceled, OrderStatus.PENDING_CANCEL)
