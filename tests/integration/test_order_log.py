"""The order log against a real SQLite file: how broker reports meet the gateway's own
transitions when they race."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from app.domain.orders import ExecutionReport, Order, OrderType, Side, TimeInForce
from app.domain.status import OrderStatus
from app.storage.sql.database import create_writer_engine
from app.storage.sql.order_log import OrderLog, checkpoint
from bench.risk import create_database
from tests.conftest import REPO, DatabaseFactory, _backends
from tests.helpers.database import read_order

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


def acknowledgement() -> ExecutionReport:
    """The broker's 'new' for ``resting_buy``."""
    return ExecutionReport(
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
    [applied] = await order_log.apply_reports([acknowledgement()])
    assert applied.order is not None
    assert applied.order.status is OrderStatus.PENDING_CANCEL

    # So the broker's cancel confirmation is still recorded.
    canceled = canceling.transition(OrderStatus.CANCELED, NOW)
    assert await order_log.record_transition(canceled, OrderStatus.PENDING_CANCEL)


@pytest.mark.parametrize("backend", _backends())
async def test_an_answer_overtaken_by_the_brokers_fill_never_leaves_the_order_older_than_it(
    backend: str, database_factory: DatabaseFactory
) -> None:
    # A market order fills inside the placement: the venue stamps the fill (to the
    # millisecond, by its clock) before the gateway stamps its acknowledgement, and the
    # applier may record the fill first. The acknowledgement's move from pending_new is then
    # not applied, but its answer is given: the order must not read as older than it.
    url = database_factory.create(backend)
    migrated = subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate"],
        env={**os.environ, "DATABASE_URL": url},
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert migrated.returncode == 0, migrated.stderr
    log = OrderLog(create_writer_engine(url), checkpoints=False)
    log.start()
    try:
        placed = resting_buy()._replace(type=OrderType.MARKET, limit_price=None)
        assert await log.insert_new(placed)
        filled_at = NOW.replace(microsecond=563_000)
        fill = ExecutionReport(
            client_order_id="c-1",
            exec_id="x-9",
            seq=1,
            status=OrderStatus.FILLED,
            cum_qty=Decimal(5),
            last_qty=Decimal(5),
            last_px=Decimal(1),
            account="acct",
            symbol="AAPL",
            side=Side.BUY,
            transact_time=filled_at,
        )
        [applied] = await log.apply_reports([fill])
        assert applied.order is not None
        assert applied.order.updated_at == filled_at

        answered = placed.transition(OrderStatus.NEW, NOW.replace(microsecond=564_136))
        assert not await log.record_transition(answered, OrderStatus.PENDING_NEW, ack=(201, "{}"))
    finally:
        await log.close()
    stored = await read_order(url, placed.id)
    assert stored.status is OrderStatus.FILLED  # the fill holds the truth
    assert stored.updated_at == answered.updated_at


async def test_reports_planned_before_the_order_moved_are_planned_again_under_the_lock(
    order_log: OrderLog, tmp_path: Path
) -> None:
    # The applier plans a batch before it takes SQLite's write lock. Here the lock is held
    # by another connection, which cancels the order (as the gateway would) while the plan
    # waits: what gets written must follow the order as it is, not as it was planned.
    placed = resting_buy()
    assert await order_log.insert_new(placed)
    live = placed.transition(OrderStatus.NEW, NOW)
    assert await order_log.record_transition(live, OrderStatus.PENDING_NEW)
    fill = ExecutionReport(
        client_order_id="c-1",
        exec_id="x-2",
        seq=1,
        status=OrderStatus.PARTIALLY_FILLED,
        cum_qty=Decimal(2),
        last_qty=Decimal(2),
        last_px=Decimal(1),
        account="acct",
        symbol="AAPL",
        side=Side.BUY,
        transact_time=NOW,
    )

    other = sqlite3.connect(tmp_path / "log.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        applying = asyncio.create_task(order_log.apply_reports([fill]))
        await asyncio.sleep(0.05)
        assert not applying.done()  # planned from status 'new', and waiting for the lock
        other.execute("UPDATE orders SET status = 'canceled' WHERE id = ?", (placed.id,))
        other.execute("COMMIT")
        [applied] = await asyncio.wait_for(applying, 10)
        stored = other.execute("SELECT status, filled_qty FROM orders WHERE id = ?", (placed.id,))
        # The fill is kept; the plan's 'partially_filled' would have revived a canceled order.
        assert stored.fetchone() == ("canceled", "2")
    finally:
        other.close()
    assert applied.order is not None
    assert applied.order.status is OrderStatus.CANCELED


async def test_a_checkpoint_starts_the_wal_over_past_its_limit_and_only_then(
    tmp_path: Path,
) -> None:
    # Under a steady stream of commits a PASSIVE checkpoint never reaches the WAL's end, and
    # SQLite starts the WAL over only after one has: 391 MB of WAL in one benchmark. Past
    # the limit, the checkpoint makes the next commit write from the WAL's start (RESTART).
    # (Here nothing writes meanwhile, so PASSIVE alone would also let the WAL start over:
    # what is checked is when the RESTART runs, and that it does start the WAL over.)
    path = tmp_path / "log.db"
    log = OrderLog(create_writer_engine(create_database(path)), checkpoints=False)
    log.start()
    try:
        orders = [
            resting_buy()._replace(id=f"01WAL{n:06d}", client_order_id=f"c{n}") for n in range(1000)
        ]
        assert all(await asyncio.gather(*(log.insert_new(order) for order in orders)))
    finally:
        await log.close()
    assert_checkpoint_restarts_the_wal_past_the_limit_only(path)


def wal_frames_after_a_commit(path: Path, name: str) -> int:
    """Commit one small write, then the number of frames the WAL holds."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("INSERT INTO stream_cursors (name, position) VALUES (?, '0')", (name,))
        db.commit()
        frames: int = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
        return frames


def assert_checkpoint_restarts_the_wal_past_the_limit_only(path: Path) -> None:
    in_use = wal_frames_after_a_commit(path, "first")
    assert in_use * 4096 > 256 * 1024
    assert not checkpoint(str(path), limit_bytes=in_use * 4096)  # at the limit: PASSIVE alone
    assert checkpoint(str(path), limit_bytes=256 * 1024)
    assert wal_frames_after_a_commit(path, "second") < 10  # written from the WAL's start
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM orders").fetchone() == (1000,)
