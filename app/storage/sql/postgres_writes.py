"""The gateway's own writes on PostgreSQL, each kind in ONE statement: one round trip.

Every statement of a batch is a round trip, and each waits for the gateway's event loop to
come round again between HTTP requests: five of them per batch (BEGIN, the check, two
writes, COMMIT) kept the writer busy most of the time at 500 orders/s. Here the rows go as
one array per column (``unnest``) into a statement that checks, writes the orders and their
events, and says which writes applied; on its own it is one transaction, so it needs no
BEGIN or COMMIT. The writes of a batch are independent (each caller's own order), so the
two kinds need not share a transaction either.

What the generic batch code (``OrderLog._execute``, also SQLite's) does, and the same
tests hold both to it:

- a new order is written unless its account already has the client_order_id (the unique
  constraint decides, concurrent writers included); with it its first event, and when its
  outcome is already known (refused by risk), that outcome, its answer and its event;
- a transition applies only if the order is still in the status the caller saw (the row is
  locked and checked again if another transaction changed it meanwhile), with its event; a
  transition that does not apply still keeps its answer, and raises ``updated_at`` to the
  answer's time;
- the events are written unnumbered: they are numbered after their commit (``executions``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import asyncpg
from sqlalchemy import Column, Dialect, Table

from app.domain.orders import Order
from app.domain.status import OrderStatus
from app.storage.sql import tables as t
from app.storage.sql.executions import move_event
from app.storage.sql.rows import EventRow, OrderRow, order_values
from app.storage.sql.statements import bind_processor, unbounded_type

ORDER_INSERT_COLUMNS = (*OrderRow._fields, "ack_status", "ack_body")
MOVE_COLUMNS = (
    "id",
    "account",
    "previous",
    "status",
    "updated_at",
    "reject_reason",
    "reason",
    "ack_status",
    "ack_body",
    "cum_qty",
    "avg_price",
)
# An event's columns as sent (it is numbered after its commit).
EVENT_COLUMNS = tuple(name for name in EventRow._fields if name != "seq")


class NewOrderWrite(NamedTuple):
    order: Order
    outcome: Order | None  # its next state, already known (a risk refusal)
    reason: str | None
    ack: tuple[int, str] | None


class MoveWrite(NamedTuple):
    order: Order  # already transitioned in memory
    previous: OrderStatus
    reason: str | None
    ack: tuple[int, str] | None


class _Arrays:
    """Rows sent as one array parameter per column, each cast to its column's type."""

    def __init__(self, dialect: Dialect, columns: Sequence[Column[Any]], first: int) -> None:
        self._width = len(columns)
        self._processors = [bind_processor(column, dialect) for column in columns]
        self.casts = [
            f"${first + i}::{unbounded_type(column, dialect)}[]" for i, column in enumerate(columns)
        ]

    def bind(self, rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
        arrays: list[list[Any]] = [[] for _ in range(self._width)]
        for row in rows:
            for array, process, value in zip(arrays, self._processors, row, strict=True):
                array.append(value if value is None or process is None else process(value))
        return arrays


class PostgresOrderWrites:
    def __init__(self, dialect: Dialect) -> None:
        orders: Table = t.orders
        self._orders = _Arrays(dialect, [orders.c[n] for n in ORDER_INSERT_COLUMNS], 1)
        events = [t.order_events.c[n] for n in EVENT_COLUMNS]
        self._events = _Arrays(dialect, events, 1 + len(ORDER_INSERT_COLUMNS))
        names = ", ".join(ORDER_INSERT_COLUMNS)
        event_names = ", ".join(EVENT_COLUMNS)
        self.insert_sql = (
            f"WITH new AS (INSERT INTO orders ({names})"
            f" SELECT * FROM unnest({', '.join(self._orders.casts)})"
            " ON CONFLICT (account, client_order_id) DO NOTHING RETURNING id),"
            f" events AS (INSERT INTO order_events ({event_names})"
            f" SELECT {', '.join('e.' + n for n in EVENT_COLUMNS)}"
            f" FROM unnest({', '.join(self._events.casts)}) WITH ORDINALITY"
            f" AS e({event_names}, n) JOIN new ON new.id = e.order_id ORDER BY e.n)"
            " SELECT id FROM new"
        )
        o = orders.c
        self._moves = _Arrays(
            dialect,
            [
                o.id,
                o.account,
                o.status,
                o.status,
                o.updated_at,
                o.reject_reason,
                t.order_events.c.reason,
                o.ack_status,
                o.ack_body,
                t.order_events.c.cum_qty,
                t.order_events.c.avg_price,
            ],
            1,
        )
        move_names = ", ".join(MOVE_COLUMNS)
        self.transition_sql = (
            f"WITH m AS (SELECT * FROM unnest({', '.join(self._moves.casts)})"
            f" WITH ORDINALITY AS m({move_names}, n)),"
            " moved AS (UPDATE orders o SET status = m.status, updated_at = m.updated_at,"
            " reject_reason = m.reject_reason,"
            " ack_status = COALESCE(m.ack_status, o.ack_status),"
            " ack_body = COALESCE(m.ack_body, o.ack_body)"
            " FROM m WHERE o.id = m.id AND o.status = m.previous RETURNING o.id),"
            # The answer to a move that the broker's own report overtook: kept for
            # replays, and the order never reads as older than an answer given for it.
            " kept AS (UPDATE orders o SET ack_status = m.ack_status, ack_body = m.ack_body,"
            " updated_at = GREATEST(o.updated_at, m.updated_at)"
            " FROM m WHERE o.id = m.id AND m.ack_status IS NOT NULL"
            " AND m.id NOT IN (SELECT id FROM moved)),"
            f" events AS (INSERT INTO order_events ({event_names})"
            " SELECT m.id, m.account, m.previous, m.status, m.reason, NULL, m.updated_at,"
            " m.cum_qty, m.avg_price, NULL"
            " FROM m JOIN moved ON moved.id = m.id ORDER BY m.n)"
            " SELECT id FROM moved"
        )

    async def insert(self, conn: asyncpg.Connection, writes: list[NewOrderWrite]) -> list[bool]:
        """Write new orders (their ids are unique: each a new order's); True for each one
        written, False where the account already had its client_order_id."""
        rows: list[tuple[Any, ...]] = []
        events: list[EventRow] = []
        # In key order: two statements inserting the same keys (a client sending one order
        # to two workers) then wait for each other in one order, never deadlock.
        for w in sorted(writes, key=lambda w: (w.order.account, w.order.client_order_id)):
            stored = w.order if w.outcome is None else w.outcome
            ack_status, ack_body = w.ack if w.ack is not None else (None, None)
            rows.append((*order_values(stored), ack_status, ack_body))
            events.append(move_event(w.order, None, None))
            if w.outcome is not None:
                events.append(move_event(w.outcome, w.order.status, w.reason))
        event_rows = [_without_seq(row) for row in events]
        parameters = [*self._orders.bind(rows), *self._events.bind(event_rows)]
        written = {r[0] for r in await conn.fetch(self.insert_sql, *parameters)}
        return [w.order.id in written for w in writes]

    async def transition(self, conn: asyncpg.Connection, moves: list[MoveWrite]) -> list[bool]:
        """Apply moves of distinct orders; True for each one applied."""
        if len({m.order.id for m in moves}) != len(moves):
            raise ValueError("one move per order in a statement")
        rows = []
        for m in moves:
            ack_status, ack_body = m.ack if m.ack is not None else (None, None)
            order = m.order
            rows.append(
                (
                    order.id,
                    order.account,
                    m.previous.value,
                    order.status.value,
                    order.updated_at,
                    order.reject_reason,
                    m.reason,
                    ack_status,
                    ack_body,
                    order.filled_qty,
                    order.avg_fill_price,
                )
            )
        moved = {r[0] for r in await conn.fetch(self.transition_sql, *self._moves.bind(rows))}
        return [m.order.id in moved for m in moves]


def _without_seq(row: EventRow) -> tuple[Any, ...]:
    return tuple(getattr(row, name) for name in EVENT_COLUMNS)
