"""The durable order log: every order write goes through one group-committing writer.

Writers enqueue a write and await its result. One task drains the queue and commits all that
arrived while the previous batch ran, with a fixed number of statements per kind of write
(set-based: one to check, one to write): a batch costs far less than its writes would one by
one. If a batch fails, its writes are retried one by one, so a bad write never sinks its
neighbours.

On SQLite a batch is one transaction, run on the event loop under the database's one write
lock (``BEGIN IMMEDIATE``). On PostgreSQL the gateway's own writes go as one statement per
kind, a round trip and a transaction each (see ``postgres_writes``); execution reports go in
a transaction that locks the rows it checks (``SELECT ... FOR UPDATE``). The unique
(account, client_order_id) constraint catches concurrent inserts on both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection

from app.domain.errors import StorageUnavailable
from app.domain.orders import ExecutionReport, Order
from app.domain.status import OrderStatus
from app.storage.sql.drivers import AsyncpgSQL, DriverSQL, SqliteSQL
from app.storage.sql.executions import move_event, take_numbers
from app.storage.sql.postgres_writes import MoveWrite, NewOrderWrite, PostgresOrderWrites
from app.storage.sql.report_plan import (
    AppliedReport,
    ReportPlan,
    plan_reports,
    read_report_state,
)
from app.storage.sql.rows import EventRow, order_values
from app.storage.sql.statements import Statements

log = logging.getLogger(__name__)

LOCK_WAIT_S = 30.0
LOCK_POLL_S = 0.001
CHECKPOINT_INTERVAL_S = 1.0
# Past this much WAL in use, a checkpoint has the WAL started over (see ``checkpoint``).
# 16 MiB of 4 KiB pages fill one block of SQLite's WAL index; a page read searches them all.
WAL_LIMIT_BYTES = 8 * 1024 * 1024
# A PostgreSQL connection that failed under a statement, which may or may not have
# committed. (InternalClientError: asyncpg found the connection mid-way through another.)
CONNECTION_ERRORS = (asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, DBAPIError)


def checkpoint(database: str, limit_bytes: int = WAL_LIMIT_BYTES) -> bool:
    """Copy the WAL into the database, and keep the WAL from growing without end.

    PASSIVE copies what it can and blocks nobody, but SQLite writes the WAL from its start
    again only after a checkpoint has reached the WAL's end, which PASSIVE never does while
    commits keep coming: the WAL grew by ~30 MB a second (at 500 orders/s as at 6,000),
    391 MB in one benchmark run. So past ``limit_bytes`` in use, a RESTART: it takes the
    write lock to copy what PASSIVE left (~0.1-2 ms), waits for readers of older snapshots,
    and the next commit writes from the WAL's start. (TRUNCATE, which also empties the
    file, held the lock ~10 ms and took P99 at 500/s from ~2.6 to ~6.5 ms.) True if it
    restarted the WAL."""
    with contextlib.closing(sqlite3.connect(database, timeout=5)) as conn:
        _busy, frames, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
        if frames * page_size <= limit_bytes:
            return False
        busy: int = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0]
        return busy == 0


@dataclass(frozen=True, slots=True)
class _Transition:
    order: Order
    previous: OrderStatus
    reason: str | None
    ack: tuple[int, str] | None


@dataclass(frozen=True, slots=True)
class _NewOrder:
    order: Order
    then: _Transition | None = None  # applied in the same transaction if the insert is


@dataclass(frozen=True, slots=True)
class _Reports:
    reports: list[ExecutionReport]
    cursor: tuple[str, str] | None


_Write = _NewOrder | _Transition | _Reports


@dataclass(slots=True)
class _Pending:
    write: _Write
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class OrderLog:
    """Group-committed writes of orders, their events, fills and positions.

    The batch logic is written once, as plain SQL on a ``DriverSQL``: on SQLite the stdlib
    connection, on the event loop (see ``_execute_sqlite``); on PostgreSQL the asyncpg
    connection the writer holds (see ``_execute_postgres``).
    """

    def __init__(
        self,
        engine: AsyncEngine | Engine,
        max_batch: int = 512,
        checkpoints: bool = True,
        order_write_timeout_s: float | None = None,
    ) -> None:
        """``order_write_timeout_s``: how long an order's own write (``insert_new``,
        ``record_transition``) may wait for its commit; past it, StorageUnavailable, and a
        write still queued is dropped, never made late.

        ``on_commit``, when set, is called after each commit that wrote order events (the
        execution publisher's signal; it must not block: the writer waits for it)."""
        self._engine = engine
        self._order_write_timeout_s = order_write_timeout_s
        self._sql = Statements(engine.dialect)
        # SQLite numbers events as it writes them; PostgreSQL after (``executions``).
        self._numbers_events = isinstance(engine, Engine)
        self.on_commit: Callable[[], None] | None = None
        self._postgres_writes = (
            PostgresOrderWrites(engine.dialect) if isinstance(engine, AsyncEngine) else None
        )
        self._checkpoints = checkpoints and isinstance(engine, Engine)
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._max_batch = max_batch
        self._task: asyncio.Task[None] | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        self._postgres: PoolProxiedConnection | None = None
        self._sqlite: PoolProxiedConnection | None = None
        self._checkpoint_thread = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="wal-checkpoint"
        )

    # -- public writes -------------------------------------------------------------------
    async def insert_new(
        self,
        order: Order,
        *,
        outcome: Order | None = None,
        reason: str | None = None,
        ack: tuple[int, str] | None = None,
    ) -> bool:
        """Write a new order and its first event. False if the account already has an
        order with this client_order_id (the idempotency backstop).
        ``outcome``: the order's next state, already known (a risk rejection), written with
        ``reason`` and the answer ``ack`` in the same transaction."""
        then = None if outcome is None else _Transition(outcome, order.status, reason, ack)
        inserted: bool = await self._submit(_NewOrder(order, then), self._order_write_timeout_s)
        return inserted

    async def record_transition(
        self,
        order: Order,
        previous: OrderStatus,
        *,
        reason: str | None = None,
        ack: tuple[int, str] | None = None,
    ) -> bool:
        """Persist ``order`` (already transitioned in memory) if the stored row is still in
        ``previous``; False when something else moved it first (e.g. a fill beat the ack).
        ``ack``, the answer given for the order, is kept either way, for replays."""
        move = _Transition(order, previous, reason, ack)
        applied: bool = await self._submit(move, self._order_write_timeout_s)
        return applied

    async def apply_reports(
        self, reports: list[ExecutionReport], cursor: tuple[str, str] | None = None
    ) -> list[AppliedReport]:
        """Apply broker execution reports in order, in one transaction with the stream cursor."""
        applied: list[AppliedReport] = await self._submit(_Reports(reports, cursor))
        return applied

    # -- the writer ----------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="order-log-writer")
        if self._checkpoints:
            self._checkpointer = asyncio.create_task(
                self._checkpoint_periodically(), name="order-log-checkpoint"
            )

    async def close(self) -> None:
        for task in (self._task, self._checkpointer):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._task = self._checkpointer = None
        await self._drop_connection()
        self._checkpoint_thread.shutdown(wait=True)

    async def _submit(self, write: _Write, timeout_s: float | None = None) -> Any:
        if self._task is None or self._task.done():
            raise RuntimeError("order log writer is not running")
        pending = _Pending(write)
        self._queue.put_nowait(pending)
        try:
            # On timeout the future is cancelled: the writer drops it if it has not taken
            # it yet, and a commit already under way is in doubt.
            async with asyncio.timeout(timeout_s):
                return await pending.future
        except TimeoutError as exc:
            raise StorageUnavailable(
                f"the order log did not confirm the write within {timeout_s:g} s"
            ) from exc
        except DBAPIError as exc:
            # Unavailable, or in doubt if the connection failed mid-commit: either way the
            # write is not known to have been made.
            raise StorageUnavailable(
                f"the order log did not confirm the write: {exc.orig!r}"
            ) from exc

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            batch = [p for p in batch if not p.future.cancelled()]  # their callers gave up
            # Orders waiting for an answer commit first; execution reports (background
            # work, and the larger transactions) go in a transaction of their own after.
            on_order_path = [p for p in batch if not isinstance(p.write, _Reports)]
            background = [p for p in batch if isinstance(p.write, _Reports)]
            for part in (on_order_path, background):
                if part:
                    await self._commit(part)

    async def _commit(self, batch: list[_Pending]) -> None:
        writes = [p.write for p in batch]
        if self._postgres_writes is not None and _one_statement_each(batch):
            await self._commit_statements(batch)
            return
        try:
            if isinstance(self._engine, AsyncEngine):
                results, wrote_events = await self._execute_postgres(writes)
            else:
                results, wrote_events = await self._execute_sqlite(writes)
        except Exception as exc:
            await self._drop_connection()
            if len(batch) == 1:
                if not batch[0].future.done():
                    batch[0].future.set_exception(exc)
                return
            log.warning("group commit of %d failed (%r); retrying one by one", len(batch), exc)
            for pending in batch:
                await self._commit([pending])
            return
        if wrote_events:
            self._committed()
        for pending, result in zip(batch, results, strict=True):
            if not pending.future.done():
                pending.future.set_result(result)

    def _committed(self) -> None:
        if self.on_commit is not None:
            try:
                self.on_commit()
            except Exception:  # the write is committed whatever the signal's fate
                log.exception("signalling a commit failed")

    async def _commit_statements(self, batch: list[_Pending]) -> None:
        """The gateway's own writes on PostgreSQL: new orders in one statement, moves in
        another, each its own transaction (see ``postgres_writes``). A statement that
        PostgreSQL refused wrote nothing, and is tried again write by write, so a bad write
        never sinks its neighbours; one whose connection failed is in doubt and fails."""
        new = [p for p in batch if isinstance(p.write, _NewOrder)]
        moves = [p for p in batch if isinstance(p.write, _Transition)]
        for part in (new, moves):
            if not part:
                continue
            try:
                results = await self._run_statement(part, new=part is new)
            except asyncpg.PostgresError as exc:
                if len(part) > 1:
                    log.warning(
                        "%d writes in one statement refused (%r); one by one", len(part), exc
                    )
                    for pending in part:
                        await self._commit([pending])
                    continue
                _fail(part, _as_dbapi_error(exc))
            except CONNECTION_ERRORS as exc:
                _fail(part, _as_dbapi_error(exc))
            except asyncio.CancelledError as exc:
                _fail(part, exc)
                raise
            except Exception as exc:  # a bug: its callers answer 500; the writer goes on
                _fail(part, exc)
            else:
                if any(results):  # each write applied wrote an event
                    self._committed()
                for pending, result in zip(part, results, strict=True):
                    if not pending.future.done():
                        pending.future.set_result(result)

    async def _run_statement(self, part: list[_Pending], *, new: bool) -> list[bool]:
        assert self._postgres_writes is not None
        writes = self._postgres_writes
        raw = await self._postgres_connection()
        try:
            if new:
                return await writes.insert(raw, [_new_order_write(p.write) for p in part])
            return await writes.transition(raw, [_move_write(p.write) for p in part])
        except asyncpg.PostgresError:
            # Refused. The connection is as good as before, unless the server ended the
            # session (it is shutting down, say).
            if raw.is_closed():
                await self._drop_connection()
            raise
        except BaseException:
            await self._drop_connection()  # its state is unknown: a new one next time
            raise

    async def _postgres_connection(self) -> asyncpg.Connection:
        """The asyncpg connection the writer keeps (no pool checkout per batch)."""
        kept = None if self._postgres is None else self._postgres.driver_connection
        if self._postgres is not None and (kept is None or kept.is_closed()):
            # The server ended it while it was idle (a restart): not worth a failed order.
            await self._drop_connection()
        if self._postgres is None:
            assert isinstance(self._engine, AsyncEngine)
            try:
                self._postgres = await self._engine.raw_connection()
            except self._engine.dialect.loaded_dbapi.Error as exc:
                # The pool hands the driver's own error through, not SQLAlchemy's.
                raise DBAPIError(None, None, exc) from exc
        return self._postgres.driver_connection

    async def _plan(self, plain: DriverSQL, writes: list[_Write]) -> dict[int, ReportPlan]:
        """Each batch of reports planned from the rows as they are now (read unlocked), its
        rows converted for the driver; by index in ``writes``."""
        plans: dict[int, ReportPlan] = {}
        for i, w in enumerate(writes):
            if isinstance(w, _Reports):
                state = await read_report_state(self._sql, plain, w.reports, lock=False)
                plans[i] = plan_reports(state, w.reports, w.cursor)
                plans[i].bind(self._sql)
        return plans

    async def _execute_postgres(self, writes: list[_Write]) -> tuple[list[Any], bool]:
        """Run the batch on the asyncpg connection the writer keeps (no pool checkout per
        batch), each statement one round trip. Execution reports are planned first, from
        unlocked reads: the rows they touch are then locked (``FOR UPDATE``) only while the
        plan is checked against them and written, and the gateway's own transitions of
        those orders wait for no more than that."""
        try:
            raw = await self._postgres_connection()
            plain = AsyncpgSQL(raw)
            plans = await self._plan(plain, writes)
            async with raw.transaction():
                return await self._execute(plain, writes, plans)
        except (asyncpg.PostgresError, *CONNECTION_ERRORS) as exc:
            raise _as_dbapi_error(exc) from exc

    async def _execute_sqlite(self, writes: list[_Write]) -> tuple[list[Any], bool]:
        """Run the batch on the event loop itself, on the stdlib connection with our own
        BEGIN IMMEDIATE ... COMMIT. A batch is well under a millisecond of SQLite work; in a
        thread, every GIL hand-over between it and the loop would cost up to a switch
        interval, several times per statement; SQLAlchemy's transaction bookkeeping cost
        more than the BEGIN and COMMIT themselves.

        Execution reports are planned, and their rows converted, before the lock is taken,
        from what the database holds then (reads need no lock in WAL mode): SQLite has one
        write lock for every process, and the gateway's commits wait while the applier holds
        it."""
        raw = self._sqlite_connection()
        plain = SqliteSQL(raw)
        try:
            plans = await self._plan(plain, writes)  # converted now, not holding the lock
            await self._lock_sqlite(raw)
            try:
                # Nothing below waits for anything: the loop runs nothing else meanwhile.
                outcome = await self._execute(plain, writes, plans)
                raw.execute("COMMIT")
            except BaseException:
                if raw.in_transaction:
                    raw.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            # As SQLAlchemy would raise it: the app answers a DBAPIError with a 503.
            raise DBAPIError.instance(None, None, exc, sqlite3.Error) from exc
        return outcome

    def _sqlite_connection(self) -> sqlite3.Connection:
        """The writer's own connection (the engine's connect hooks set its pragmas)."""
        assert isinstance(self._engine, Engine)
        if self._sqlite is None:
            self._sqlite = self._engine.raw_connection()
        raw: sqlite3.Connection = self._sqlite.dbapi_connection  # type: ignore[assignment]
        return raw

    async def _lock_sqlite(self, raw: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE, without waiting in SQLite (busy_timeout 0 would block the loop):
        while another process holds the write lock, try again every millisecond. A try
        costs microseconds, so a short interval loses little time once the lock is free."""
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                raw.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(LOCK_POLL_S)

    async def _checkpoint_periodically(self) -> None:
        """Move the WAL into the database off the event loop (the writer's connection has
        automatic checkpoints off, so no commit ever pays for one)."""
        assert isinstance(self._engine, Engine)
        database = self._engine.url.database or ""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(CHECKPOINT_INTERVAL_S)
            try:
                await loop.run_in_executor(self._checkpoint_thread, checkpoint, database)
            except sqlite3.Error as exc:
                log.warning("WAL checkpoint failed: %r", exc)

    async def _drop_connection(self) -> None:
        if self._postgres is not None:
            connection, self._postgres = self._postgres, None
            with contextlib.suppress(Exception):
                connection.invalidate()  # its state is unknown after an error: a new one
        if self._sqlite is not None:
            raw, self._sqlite = self._sqlite, None
            with contextlib.suppress(Exception):
                raw.close()

    async def _execute(
        self, plain: DriverSQL, writes: list[_Write], plans: dict[int, ReportPlan]
    ) -> tuple[list[Any], bool]:
        """The batch's statements, in the transaction the caller began; its events are
        written last, all at once. Whether it wrote any."""
        results: list[Any] = [None] * len(writes)
        events: list[EventRow] = []
        followups: list[_Transition] = []
        new = [(i, w) for i, w in enumerate(writes) if isinstance(w, _NewOrder)]
        if new:
            inserted = await self._insert_orders(plain, [w.order for _, w in new], events)
            for (i, write), ok in zip(new, inserted, strict=True):
                results[i] = ok
                if ok and write.then is not None:
                    followups.append(write.then)
        moves = [(i, w) for i, w in enumerate(writes) if isinstance(w, _Transition)]
        if moves or followups:
            all_moves = [w for _, w in moves] + followups
            applied = await self._transition_orders(plain, all_moves, events)
            for (i, _), ok in zip(moves, applied[: len(moves)], strict=True):
                results[i] = ok
        for i, w in enumerate(writes):
            if isinstance(w, _Reports):
                planned = await self._apply_reports(plain, w.reports, w.cursor, plans.get(i))
                results[i] = planned.applied
                events.extend(planned.events)
        return results, await self._write_events(plain, events)

    async def _write_events(self, conn: DriverSQL, events: list[EventRow]) -> bool:
        """Write the events, on SQLite numbered per account (see ``executions``)."""
        if not events:
            return False
        rows: list[tuple[Any, ...]] = list(events)
        if self._numbers_events:
            seqs = await take_numbers(conn, [e.account for e in events])
            rows = [e._replace(seq=seq) for e, seq in zip(events, seqs, strict=True)]
        await self._sql.insert_events.run(conn, rows)
        return True

    # -- set-based statements: a fixed number per kind of write, whatever the batch size ---
    async def _insert_orders(
        self, conn: DriverSQL, orders: list[Order], events: list[EventRow]
    ) -> list[bool]:
        keys = [(o.account, o.client_order_id) for o in orders]
        wanted = set(keys)
        taken = set(await self._sql.taken_client_ids.run(conn, sorted(wanted))) & wanted
        fresh: list[Order] = []
        outcome: list[bool] = []
        for order, key in zip(orders, keys, strict=True):
            ok = key not in taken
            taken.add(key)
            outcome.append(ok)
            if ok:
                fresh.append(order)
        await self._sql.insert_orders.run(conn, [order_values(o) for o in fresh])
        events.extend(move_event(o, None, None) for o in fresh)
        return outcome

    async def _transition_orders(
        self, conn: DriverSQL, moves: list[_Transition], events: list[EventRow]
    ) -> list[bool]:
        ids = list({m.order.id for m in moves})
        current: dict[str, str] = dict(
            await self._sql.statuses_by_id.run(conn, [(order_id,) for order_id in ids])
        )
        status_rows: list[tuple[Any, ...]] = []
        ack_rows: list[tuple[Any, ...]] = []
        outcome: list[bool] = []
        for move in moves:
            order = move.order
            ack_status, ack_body = move.ack if move.ack is not None else (None, None)
            ok = current.get(order.id) == move.previous.value
            outcome.append(ok)
            if not ok:
                if move.ack is not None:  # kept for replays even when the move is not
                    at = order.updated_at
                    ack_rows.append((ack_status, ack_body, at, at, order.id))
                continue
            current[order.id] = order.status.value
            status_rows.append(
                (
                    order.status.value,
                    order.updated_at,
                    order.reject_reason,
                    ack_status,
                    ack_body,
                    order.id,
                )
            )
            events.append(move_event(order, move.previous, move.reason))
        await self._sql.update_status.run(conn, status_rows)
        await self._sql.update_ack.run(conn, ack_rows)
        return outcome

    async def _apply_reports(
        self,
        conn: DriverSQL,
        reports: list[ExecutionReport],
        cursor: tuple[str, str] | None,
        planned: ReportPlan | None = None,
    ) -> ReportPlan:
        """Apply reports in this transaction (all but their events, which the caller
        writes): ``planned`` if it was worked out from the state the database holds now,
        else a plan made from that state."""
        state = await read_report_state(self._sql, conn, reports)
        if planned is None or planned.state != state:
            planned = plan_reports(state, reports, cursor)
        await planned.write(self._sql, conn)
        return planned


def _one_statement_each(batch: list[_Pending]) -> bool:
    """Whether the batch goes as one statement per kind of write: the gateway's own writes
    (not reports), one move per order."""
    moved: set[str] = set()
    for w in (p.write for p in batch):
        if isinstance(w, _Reports):
            return False
        if isinstance(w, _Transition):
            if w.order.id in moved:
                return False
            moved.add(w.order.id)
    return True


def _fail(part: list[_Pending], exc: BaseException) -> None:
    for pending in part:
        if not pending.future.done():
            pending.future.set_exception(exc)


def _new_order_write(w: _Write) -> NewOrderWrite:
    assert isinstance(w, _NewOrder)
    if w.then is None:
        return NewOrderWrite(w.order, None, None, None)
    return NewOrderWrite(w.order, w.then.order, w.then.reason, w.then.ack)


def _move_write(w: _Write) -> MoveWrite:
    assert isinstance(w, _Transition)
    return MoveWrite(w.order, w.previous, w.reason, w.ack)


def _as_dbapi_error(exc: BaseException) -> DBAPIError:
    """As SQLAlchemy would raise it: the app answers a DBAPIError with a 503."""
    if isinstance(exc, DBAPIError):
        return exc
    return DBAPIError(None, None, exc)
