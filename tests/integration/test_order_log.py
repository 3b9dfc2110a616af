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
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from app.domain.errors import StorageUnavailable
from app.domain.orders import ExecutionReport, Order, OrderType, Side, TimeInForce
from app.domain.status import OrderStatus
from app.storage.sql.database import create_writer_engine
from app.storage.sql.drivers import AsyncpgSQL
from app.storage.sql.order_log import OrderLog, checkpoint
from app.storage.sql.rows import FillStateRow, PositionRow
from bench.risk import create_database
from tests.conftest import REPO, DatabaseFactory, _backends
from tests.helpers.database import driver_connection, order_story, read_ack, read_order

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
    return report_of_resting_buy("x-1", OrderStatus.NEW, filled=0)


def report_of_resting_buy(
    exec_id: str, status: OrderStatus, *, filled: int, last: int = 0, at: datetime = NOW
) -> ExecutionReport:
    """The broker's report number 1 for ``resting_buy``: ``filled`` in all, ``last`` of it
    now (at 1)."""
    return ExecutionReport(
        client_order_id="c-1",
        exec_id=exec_id,
        seq=1,
        status=status,
        cum_qty=Decimal(filled),
        last_qty=Decimal(last),
        last_px=Decimal(1) if last else None,
        account="acct",
        symbol="AAPL",
        side=Side.BUY,
        transact_time=at,
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


@dataclass
class MigratedLog:
    url: str
    log: OrderLog


@pytest.fixture(params=_backends())
async def migrated_log(
    request: pytest.FixtureRequest, database_factory: DatabaseFactory
) -> AsyncIterator[MigratedLog]:
    """An order log on a new database of each backend, made by ``ordergate migrate``."""
    async for log in _migrated(database_factory.create(request.param)):
        yield log


@pytest.fixture(params=[b for b in _backends() if b == "postgres"])
async def migrated_postgres(
    request: pytest.FixtureRequest, database_factory: DatabaseFactory
) -> AsyncIterator[MigratedLog]:
    """As ``migrated_log``, on PostgreSQL only (TEST_DATABASE_URL)."""
    async for log in _migrated(database_factory.create(request.param)):
        yield log


async def _migrated(url: str) -> AsyncIterator[MigratedLog]:
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
    yield MigratedLog(url, log)
    await log.close()


async def test_an_answer_overtaken_by_the_brokers_fill_never_leaves_the_order_older_than_it(
    migrated_log: MigratedLog,
) -> None:
    # A market order fills inside the placement: the venue stamps the fill (to the
    # millisecond, by its clock) before the gateway stamps its acknowledgement, and the
    # applier may record the fill first. The acknowledgement's move from pending_new is then
    # not applied, but its answer is given: the order must not read as older than it.
    log = migrated_log.log
    placed = resting_buy()._replace(type=OrderType.MARKET, limit_price=None)
    assert await log.insert_new(placed)
    filled_at = NOW.replace(microsecond=563_000)
    fill = report_of_resting_buy("x-9", OrderStatus.FILLED, filled=5, last=5, at=filled_at)
    [applied] = await log.apply_reports([fill])
    assert applied.order is not None
    assert applied.order.updated_at == filled_at

    answered = placed.transition(OrderStatus.NEW, NOW.replace(microsecond=564_136))
    assert not await log.record_transition(answered, OrderStatus.PENDING_NEW, ack=(201, "{}"))
    stored = await read_order(migrated_log.url, placed.id)
    assert stored.status is OrderStatus.FILLED  # the fill holds the truth
    assert stored.updated_at == answered.updated_at


def numbered(n: int, client_order_id: str | None = None) -> Order:
    return resting_buy()._replace(id=f"01BATCH{n:06d}", client_order_id=client_order_id or f"b{n}")


async def test_one_batch_of_new_orders_keeps_the_first_of_a_client_order_id_and_every_story(
    migrated_log: MigratedLog,
) -> None:
    log = migrated_log.log
    denied_at = NOW.replace(microsecond=1)
    refused = numbered(3)
    outcome = refused.transition(OrderStatus.DENIED, denied_at, reject_reason="risk.max_qty")
    # Submitted together, so committed as one batch.
    results = await asyncio.gather(
        log.insert_new(numbered(1, "same")),
        log.insert_new(numbered(2, "same")),
        log.insert_new(refused, outcome=outcome, reason="risk.max_qty", ack=(422, '{"x":1}')),
        log.insert_new(numbered(4)),
    )
    assert results == [True, False, True, True]
    assert await order_story(migrated_log.url, numbered(1).id) == [(None, "pending_new", None)]
    assert await order_story(migrated_log.url, numbered(2).id) == []
    assert await order_story(migrated_log.url, refused.id) == [
        (None, "pending_new", None),
        ("pending_new", "denied", "risk.max_qty"),
    ]
    stored = await read_order(migrated_log.url, refused.id)
    assert (stored.status, stored.reject_reason, stored.updated_at) == (
        OrderStatus.DENIED,
        "risk.max_qty",
        denied_at,
    )
    assert await read_ack(migrated_log.url, refused.id) == (422, '{"x":1}')


async def test_a_write_that_fails_in_a_batch_does_not_sink_its_neighbours(
    migrated_log: MigratedLog,
) -> None:
    log = migrated_log.log
    # A value the database refuses (NOT NULL), the same on every backend.
    refused = numbered(2)._replace(request_hash=None)
    results = await asyncio.gather(
        log.insert_new(numbered(1)),
        log.insert_new(refused),
        log.insert_new(numbered(3)),
        return_exceptions=True,
    )
    assert results[0] is True
    assert isinstance(results[1], StorageUnavailable)
    assert results[2] is True
    moves = [numbered(n).transition(OrderStatus.NEW, NOW) for n in (1, 3)]
    bad = numbered(3).transition(OrderStatus.REJECTED, None, reject_reason="r")  # type: ignore[arg-type]
    outcome = await asyncio.gather(
        log.record_transition(moves[0], OrderStatus.PENDING_NEW),
        log.record_transition(bad, OrderStatus.PENDING_NEW),
        return_exceptions=True,
    )
    assert outcome[0] is True
    assert isinstance(outcome[1], StorageUnavailable)
    # Nothing of the failed writes was kept; what did not fail was.
    assert await order_story(migrated_log.url, numbered(3).id) == [(None, "pending_new", None)]
    assert (await read_order(migrated_log.url, numbered(1).id)).status is OrderStatus.NEW
    assert await log.record_transition(moves[1], OrderStatus.PENDING_NEW)


async def test_moves_of_one_order_in_one_batch_apply_in_turn(migrated_log: MigratedLog) -> None:
    log = migrated_log.log
    placed = numbered(1)
    assert await log.insert_new(placed)
    live = placed.transition(OrderStatus.NEW, NOW)
    canceling = live.transition(OrderStatus.PENDING_CANCEL, NOW)
    stale = placed.transition(OrderStatus.REJECTED, NOW, reject_reason="late")
    results = await asyncio.gather(
        log.record_transition(live, OrderStatus.PENDING_NEW, ack=(201, "{}")),
        log.record_transition(canceling, OrderStatus.NEW),
        log.record_transition(stale, OrderStatus.PENDING_NEW),
    )
    assert results == [True, True, False]
    assert await order_story(migrated_log.url, placed.id) == [
        (None, "pending_new", None),
        ("pending_new", "new", None),
        ("new", "pending_cancel", None),
    ]


async def test_lookups_by_a_key_of_two_columns_find_the_keys_asked_for_and_no_others(
    migrated_log: MigratedLog,
) -> None:
    log = migrated_log.log
    for order in (numbered(1, "x"), numbered(2, "y"), numbered(3, "x")._replace(account="b")):
        assert await log.insert_new(order)
    asked = [("acct", "x"), ("b", "x"), ("acct", "z")]
    async with driver_connection(migrated_log.url) as (sql, conn):
        for lookup in (sql.orders_by_key, sql.orders_by_key_unlocked, sql.taken_client_ids):
            rows = await lookup.run(conn, asked)
            found = {(row[1], row[2]) for row in rows} if len(rows[0]) > 2 else set(rows)
            assert found == {("acct", "x"), ("b", "x")}
        with pytest.raises(ValueError, match="keys of 1 values"):
            await sql.orders_by_key.run(conn, [("acct",)])


async def test_a_write_of_one_key_twice_in_one_call_applies_each_row_in_turn(
    migrated_log: MigratedLog,
) -> None:
    # On PostgreSQL a call is one statement over arrays when its keys are distinct; one
    # statement would update a repeated key once (or, an upsert, fail), so such rows go
    # one by one, as on SQLite.
    url = migrated_log.url
    placed = numbered(1)
    assert await migrated_log.log.insert_new(placed)
    later = NOW.replace(microsecond=2)

    def fill_state(filled: int, at: datetime) -> FillStateRow:
        return FillStateRow(
            "partially_filled", Decimal(filled), Decimal(1), filled, None, at, placed.id
        )

    def position(qty: int) -> PositionRow:
        return PositionRow("acct", "AAPL", Decimal(qty), Decimal(1), Decimal(0), NOW)

    async with driver_connection(url) as (sql, conn):
        await sql.update_fill_state.run(conn, [fill_state(1, NOW), fill_state(2, later)])
        await sql.upsert_positions.run(conn, [position(1), position(3)])
        await sql.upsert_cursor.run(conn, [("applier", "1-0"), ("applier", "2-0")])
    stored = await read_order(url, placed.id)
    assert (stored.filled_qty, stored.updated_at) == (Decimal(2), later)
    async with driver_connection(url) as (sql, conn):
        [row] = await sql.positions_by_key.run(conn, [("acct", "AAPL")])
        assert Decimal(str(row[2])) == 3
        assert await conn.fetch("SELECT position FROM stream_cursors", []) == [("2-0",)]


async def test_postgresql_looks_up_orders_and_fills_by_their_keys_before_any_analyze(
    migrated_postgres: MigratedLog,
) -> None:
    # Each call is planned for its own keys from the statistics the database has: on a new
    # order log none, until autovacuum first analyzes it (never, on a server with it off).
    # Once the log holds more than a few thousand orders, the applier's lookups must probe
    # the keys' own indexes, not scan an account's every order or the whole fills table.
    async with driver_connection(migrated_postgres.url) as (sql, conn):
        assert isinstance(conn, AsyncpgSQL)
        await conn.raw.execute(
            "INSERT INTO orders (id, account, client_order_id, symbol, side, qty, type,"
            " time_in_force, status, filled_qty, request_hash, exec_seq, created_at,"
            " updated_at) SELECT 'o' || i, 'acct', 'c' || i, 'AAPL', 'buy', 1, 'market', 'day',"
            " 'filled', 1, 'h', 1, now(), now() FROM generate_series(1, 20000) AS i;"
            " INSERT INTO fills (exec_id, order_id, account, symbol, side, qty, price, at)"
            " SELECT 'x' || i, 'o' || i, 'acct', 'AAPL', 'buy', 1, 1, now()"
            " FROM generate_series(1, 20000) AS i"
        )

        async def plan(statement: str | None, *keys: list[str]) -> str:
            assert statement is not None
            return "\n".join(row[0] for row in await conn.raw.fetch("EXPLAIN " + statement, *keys))

        coids = [f"c{i}" for i in range(1000, 1064)]
        for lookup in (sql.orders_by_key, sql.orders_by_key_unlocked):
            orders_plan = await plan(lookup.array_sql, ["acct"] * 64, coids)
            assert "uq_orders_account_client_order_id" in orders_plan, orders_plan
            assert "ix_orders_account_id" not in orders_plan, orders_plan
            assert "Seq Scan" not in orders_plan, orders_plan
        fills_plan = await plan(sql.known_fills.array_sql, [f"y{i}" for i in range(64)])
        assert "fills_pkey" in fills_plan, fills_plan
        assert "Seq Scan" not in fills_plan, fills_plan


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
    fill = report_of_resting_buy("x-2", OrderStatus.PARTIALLY_FILLED, filled=2, last=2)

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
