"""The durable order log: every order write goes through one group-committing writer.

Writers enqueue an operation and await its result. A single task drains the queue and runs
everything that arrived while the previous transaction was committing in ONE transaction,
so concurrent orders share a commit (and its fsync) instead of queueing for one each.
An operation that fails is retried alone, so one bad write never sinks its neighbours.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Table, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.domain.orders import (
    ExecutionReport,
    Order,
    Position,
    apply_fill_to_position,
)
from app.domain.status import OrderStatus, can_transition
from app.storage import tables as t
from app.storage.rows import order_from_row, order_to_row

log = logging.getLogger(__name__)

Operation = Callable[[AsyncConnection], Awaitable[Any]]


@dataclass(slots=True)
class _Pending:
    operation: Operation
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(frozen=True, slots=True)
class AppliedReport:
    """What applying one execution report changed (``order`` is None if it changed nothing)."""

    report: ExecutionReport
    order: Order | None


class OrderLog:
    """Group-committed writes of orders, their events, fills and positions."""

    def __init__(self, engine: AsyncEngine, max_batch: int = 256) -> None:
        self._engine = engine
        self._dialect = engine.dialect.name
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._max_batch = max_batch
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.operations = 0

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="order-log-writer")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def submit(self, operation: Operation) -> Any:
        if self._task is None or self._task.done():
            raise RuntimeError("order log writer is not running")
        pending = _Pending(operation)
        self._queue.put_nowait(pending)
        return await pending.future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._commit(batch)

    async def _commit(self, batch: list[_Pending]) -> None:
        try:
            async with self._engine.begin() as conn:
                results = [await p.operation(conn) for p in batch]
        except Exception as exc:
            if len(batch) == 1:
                if not batch[0].future.done():
                    batch[0].future.set_exception(exc)
                return
            log.warning("group commit of %d failed (%s); retrying one by one", len(batch), exc)
            for pending in batch:
                await self._commit([pending])
            return
        self.batches += 1
        self.operations += len(batch)
        for pending, result in zip(batch, results, strict=True):
            if not pending.future.done():
                pending.future.set_result(result)

    # -- operations --------------------------------------------------------------------
    def _insert(self, table: Table) -> Any:
        dialect_module = sqlite if self._dialect == "sqlite" else postgresql
        return dialect_module.insert(table)

    async def insert_new(self, order: Order) -> bool:
        """Write a new order (pending_new) and its first event. False if the account
        already has an order with this client_order_id (the idempotency backstop)."""

        async def operation(conn: AsyncConnection) -> bool:
            stmt = self._insert(t.orders).values(**order_to_row(order)).on_conflict_do_nothing()
            result = await conn.execute(stmt)
            if result.rowcount != 1:
                return False
            await conn.execute(
                t.order_events.insert().values(
                    order_id=order.id,
                    account=order.account,
                    from_status=None,
                    to_status=order.status.value,
                    reason=None,
                    at=order.created_at,
                )
            )
            return True

        result: bool = await self.submit(operation)
        return result

    async def record_transition(
        self,
        order: Order,
        previous: OrderStatus,
        *,
        reason: str | None = None,
        ack: tuple[int, str] | None = None,
    ) -> bool:
        """Persist ``order`` (already transitioned in memory) if the stored row is still in
        ``previous``; False when someone else moved it first (e.g. a fill beat the ack)."""

        async def operation(conn: AsyncConnection) -> bool:
            values: dict[str, Any] = {
                "status": order.status.value,
                "updated_at": order.updated_at,
                "reject_reason": order.reject_reason,
            }
            if ack is not None:
                values["ack_status"], values["ack_body"] = ack
            result = await conn.execute(
                update(t.orders)
                .where(t.orders.c.id == order.id, t.orders.c.status == previous.value)
                .values(**values)
            )
            if result.rowcount != 1:
                return False
            await conn.execute(
                t.order_events.insert().values(
                    order_id=order.id,
                    account=order.account,
                    from_status=previous.value,
                    to_status=order.status.value,
                    reason=reason,
                    at=order.updated_at,
                )
            )
            return True

        result: bool = await self.submit(operation)
        return result

    async def store_ack(self, order_id: str, ack: tuple[int, str]) -> None:
        """Keep the answer given for an order whose status did not change with it."""

        async def operation(conn: AsyncConnection) -> None:
            await conn.execute(
                update(t.orders)
                .where(t.orders.c.id == order_id)
                .values(ack_status=ack[0], ack_body=ack[1])
            )

        await self.submit(operation)

    async def apply_reports(
        self, reports: list[ExecutionReport], cursor: tuple[str, str] | None = None
    ) -> list[AppliedReport]:
        """Apply broker execution reports in order, in one transaction with the stream cursor."""

        async def operation(conn: AsyncConnection) -> list[AppliedReport]:
            applied = [await self._apply_report(conn, report) for report in reports]
            if cursor is not None:
                name, position = cursor
                stmt = self._insert(t.stream_cursors).values(name=name, position=position)
                await conn.execute(
                    stmt.on_conflict_do_update(index_elements=["name"], set_={"position": position})
                )
            return applied

        result: list[AppliedReport] = await self.submit(operation)
        return result

    async def _apply_report(self, conn: AsyncConnection, report: ExecutionReport) -> AppliedReport:
        query = select(t.orders).where(
            t.orders.c.client_order_id == report.client_order_id,
            t.orders.c.account == report.account,
        )
        if self._dialect != "sqlite":
            query = query.with_for_update()
        row = (await conn.execute(query)).mappings().first()
        if row is None:
            log.error(
                "execution report for unknown order %s/%s", report.account, report.client_order_id
            )
            return AppliedReport(report, None)
        order = order_from_row(row)
        if report.seq <= order.exec_seq:
            return AppliedReport(report, None)  # already applied: replays are harmless
        now = report.transact_time or datetime.now(UTC)
        changes: dict[str, Any] = {"exec_seq": report.seq}
        if report.is_fill:
            if report.last_px is None:
                raise ValueError(f"fill {report.exec_id} without a price")
            inserted = await conn.execute(
                self._insert(t.fills)
                .values(
                    exec_id=report.exec_id,
                    order_id=order.id,
                    account=order.account,
                    symbol=order.symbol,
                    side=order.side.value,
                    qty=report.last_qty,
                    price=report.last_px,
                    at=now,
                )
                .on_conflict_do_nothing()
            )
            if inserted.rowcount == 1:
                cost = (order.avg_fill_price or Decimal(0)) * order.filled_qty
                changes["filled_qty"] = order.filled_qty + report.last_qty
                changes["avg_fill_price"] = (
                    (cost + report.last_px * report.last_qty) / changes["filled_qty"]
                ).quantize(Decimal("1e-8"))
                await self._add_to_position(conn, order, report.last_qty, report.last_px, now)
        status = report.status
        if status == order.status or not can_transition(order.status, status):
            # Same status (another partial fill) or a stale report: keep the status.
            if status != order.status:
                log.warning(
                    "ignoring %s -> %s for %s (seq %d)", order.status, status, order.id, report.seq
                )
            updated = _replace(order, now, changes)
        else:
            if status is OrderStatus.REJECTED:
                changes["reject_reason"] = report.reason or "broker.rejected"
            updated = order.transition(status, now, **changes)
        await conn.execute(
            update(t.orders)
            .where(t.orders.c.id == order.id)
            .values(
                status=updated.status.value,
                filled_qty=updated.filled_qty,
                avg_fill_price=updated.avg_fill_price,
                exec_seq=updated.exec_seq,
                reject_reason=updated.reject_reason,
                updated_at=updated.updated_at,
            )
        )
        await conn.execute(
            t.order_events.insert().values(
                order_id=order.id,
                account=order.account,
                from_status=order.status.value,
                to_status=updated.status.value,
                reason=report.reason,
                exec_id=report.exec_id,
                at=now,
            )
        )
        return AppliedReport(report, updated)

    async def _add_to_position(
        self, conn: AsyncConnection, order: Order, qty: Decimal, price: Decimal, at: datetime
    ) -> None:
        query = select(t.positions).where(
            t.positions.c.account == order.account, t.positions.c.symbol == order.symbol
        )
        if self._dialect != "sqlite":
            query = query.with_for_update()
        row = (await conn.execute(query)).mappings().first()
        current = Position(order.account, order.symbol, Decimal(0), Decimal(0), Decimal(0))
        if row is not None:
            current = Position(
                order.account, order.symbol, row["qty"], row["avg_price"], row["realized_pnl"]
            )
        new = apply_fill_to_position(current, order.side, qty, price)
        values = {
            "qty": new.qty,
            "avg_price": new.avg_price,
            "realized_pnl": new.realized_pnl,
            "updated_at": at,
        }
        stmt = self._insert(t.positions).values(
            account=order.account, symbol=order.symbol, **values
        )
        await conn.execute(
            stmt.on_conflict_do_update(index_elements=["account", "symbol"], set_=values)
        )


def _replace(order: Order, at: datetime, changes: dict[str, Any]) -> Order:
    return replace(order, updated_at=at, **changes)
