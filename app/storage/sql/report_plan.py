"""Applying a batch of execution reports, in three steps: read, plan, write.

``read_report_state`` reads what the reports touch (their orders, the fills already known,
the positions), as the driver gives it. ``plan_reports`` works out, without I/O, every row
the batch changes. ``ReportPlan.write`` writes them.

Split so that on SQLite the applier can read and plan *before* taking the database's one
write lock, which the gateway's own commits wait for: under the lock it reads the same
state again and writes the plan if nothing moved meanwhile (else plans again from what it
just read). The planning, not SQLite, was most of the time the lock was held.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from app.domain.orders import ExecutionReport, Order, Position, apply_fill_to_position
from app.domain.reports import apply_report
from app.storage.sql.drivers import DriverSQL
from app.storage.sql.rows import (
    EventRow,
    FillRow,
    FillStateRow,
    OrderRow,
    PositionRow,
    order_from_values,
)
from app.storage.sql.statements import RawWrite, Statements
from app.storage.sql.tables import decimal_from_db

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AppliedReport:
    """What applying one execution report changed (``order`` is None if it changed nothing)."""

    report: ExecutionReport
    order: Order | None


@dataclass(frozen=True, slots=True)
class ReportState:
    """The stored rows a batch of reports depends on, keyed so that two reads compare equal
    exactly when nothing they cover has changed."""

    orders: dict[str, OrderRow]  # by order id
    known_fills: frozenset[str]
    positions: dict[tuple[str, str], PositionRow]  # by (account, symbol)


async def read_report_state(
    sql: Statements, conn: DriverSQL, reports: list[ExecutionReport], *, lock: bool = True
) -> ReportState:
    """What ``reports`` depend on. ``lock``: lock the rows read (PostgreSQL's FOR UPDATE),
    as the transaction that writes the plan must; a plan made before it reads unlocked."""
    orders_by_key = sql.orders_by_key if lock else sql.orders_by_key_unlocked
    positions_by_key = sql.positions_by_key if lock else sql.positions_by_key_unlocked
    wanted = {(r.account, r.client_order_id) for r in reports}
    order_rows = await orders_by_key.run(conn, sorted(wanted))
    orders = {
        row.id: row
        for row in map(OrderRow._make, order_rows)
        if (row.account, row.client_order_id) in wanted
    }
    fill_ids = [r.exec_id for r in reports if r.is_fill]
    known_rows = await sql.known_fills.run(conn, [(exec_id,) for exec_id in fill_ids])
    known = frozenset(exec_id for (exec_id,) in known_rows)
    keys = {(row.account, row.symbol) for row in orders.values()}
    positions: dict[tuple[str, str], PositionRow] = {}
    if keys:
        rows = await positions_by_key.run(conn, sorted(keys))
        positions = {
            (row.account, row.symbol): row
            for row in map(PositionRow._make, rows)
            if (row.account, row.symbol) in keys
        }
    return ReportState(orders, known, positions)


@dataclass(slots=True)
class ReportPlan:
    """Every row a batch of reports writes, worked out from ``state``."""

    state: ReportState
    applied: list[AppliedReport] = field(default_factory=list)
    order_rows: list[FillStateRow] = field(default_factory=list)
    fill_rows: list[FillRow] = field(default_factory=list)
    position_rows: list[PositionRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    cursor: tuple[str, str] | None = None
    unknown: list[ExecutionReport] = field(default_factory=list)
    _bound: list[tuple[RawWrite, list[tuple[Any, ...]]]] | None = None

    def bind(self, sql: Statements) -> list[tuple[RawWrite, list[tuple[Any, ...]]]]:
        """Each statement with its rows converted for the driver; converted once, so the
        applier does it before taking SQLite's write lock (half of the writing time)."""
        if self._bound is None:
            self._bound = [
                (statement, statement.bind(rows))
                for statement, rows in (
                    (sql.update_fill_state, self.order_rows),
                    (sql.insert_fills, self.fill_rows),
                    (sql.upsert_positions, self.position_rows),
                    (sql.upsert_cursor, [] if self.cursor is None else [self.cursor]),
                )
            ]
        return self._bound

    async def write(self, sql: Statements, conn: DriverSQL) -> None:
        for report in self.unknown:
            log.error(
                "execution report for unknown order %s/%s", report.account, report.client_order_id
            )
        for statement, bound in self.bind(sql):
            await statement.execute(conn, bound)


def plan_reports(
    state: ReportState, reports: list[ExecutionReport], cursor: tuple[str, str] | None
) -> ReportPlan:
    """Apply ``reports`` in order to the orders and positions in ``state`` (no I/O)."""
    plan = ReportPlan(state, cursor=cursor)
    orders = {
        (o.account, o.client_order_id): o for o in map(order_from_values, state.orders.values())
    }
    seen_fills = set(state.known_fills)
    positions = _positions(state, {(o.account, o.symbol) for o in orders.values()})
    changed: dict[str, Order] = {}
    touched: set[tuple[str, str]] = set()
    now = datetime.now(UTC)
    for report in reports:
        order = orders.get((report.account, report.client_order_id))
        if order is None:
            plan.unknown.append(report)
            plan.applied.append(AppliedReport(report, None))
            continue
        outcome = apply_report(order, report, fill_known=report.exec_id in seen_fills, now=now)
        if outcome is None:
            plan.applied.append(AppliedReport(report, None))  # a replay: already applied
            continue
        updated, fill = outcome.order, outcome.fill
        if updated.status == order.status and report.status != order.status:
            log.info(
                "keeping %s over %s for %s (seq %d)",
                order.status,
                report.status,
                order.id,
                report.seq,
            )
        orders[(order.account, order.client_order_id)] = updated
        if fill is not None:
            seen_fills.add(report.exec_id)
            plan.fill_rows.append(
                FillRow(
                    exec_id=report.exec_id,
                    order_id=order.id,
                    account=order.account,
                    symbol=order.symbol,
                    side=order.side.value,
                    qty=fill.qty,
                    price=fill.price,
                    at=fill.at,
                )
            )
            key = (order.account, order.symbol)
            positions[key] = apply_fill_to_position(
                positions[key], order.side, fill.qty, fill.price
            )
            touched.add(key)
        if outcome.moved:
            # A report that changes nothing (e.g. the broker's 'new' after our own ack)
            # is not written: applying it again is as harmless as skipping it.
            changed[updated.id] = updated
            position = positions[(order.account, order.symbol)] if fill is not None else None
            row = EventRow(
                order_id=order.id,
                account=order.account,
                from_status=order.status.value,
                to_status=updated.status.value,
                reason=report.reason,
                exec_id=report.exec_id,
                at=updated.updated_at,  # never before the order's previous event
                seq=None,
                cum_qty=updated.filled_qty,
                avg_price=updated.avg_fill_price,
                position_qty=None if position is None else position.qty,
            )
            plan.events.append(row)
        plan.applied.append(AppliedReport(report, updated))

    plan.order_rows = [
        FillStateRow(
            status=o.status.value,
            filled_qty=o.filled_qty,
            avg_fill_price=o.avg_fill_price,
            exec_seq=o.exec_seq,
            reject_reason=o.reject_reason,
            updated_at=o.updated_at,
            id=o.id,
        )
        for o in changed.values()
    ]
    plan.position_rows = [
        PositionRow(p.account, p.symbol, p.qty, p.avg_price, p.realized_pnl, now)
        for p in (positions[k] for k in touched)
    ]
    return plan


def _positions(state: ReportState, keys: set[tuple[str, str]]) -> dict[tuple[str, str], Position]:
    positions = {k: Position(k[0], k[1], Decimal(0), Decimal(0), Decimal(0)) for k in keys}
    for (account, symbol), row in state.positions.items():
        positions[(account, symbol)] = Position(
            account,
            symbol,
            decimal_from_db(row.qty),
            decimal_from_db(row.avg_price),
            decimal_from_db(row.realized_pnl),
        )
    return positions
