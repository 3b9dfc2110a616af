"""The order log's statements, prepared once per dialect.

Writes are plain SQL run with the driver's ``executemany`` on tuples, values converted by
the columns' own SQLAlchemy bind processors (so SQLite text decimals and timestamps stay
exactly what the SQLAlchemy readers expect). Reads are plain SQL too, one IN list per key
column, their rows returned as the driver gives them (``rows.order_from_values`` converts
orders). Building, compiling and result-processing SQLAlchemy statements per batch cost
more CPU than the database work itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Column, Dialect, Table

from app.storage.sql import tables as t
from app.storage.sql.drivers import DriverSQL
from app.storage.sql.rows import EventRow, FillRow, FillStateRow, OrderRow, PositionRow


class RawWrite:
    """One INSERT/UPDATE, run as executemany over tuples in column order."""

    def __init__(self, dialect: Dialect, sql: str, columns: Sequence[Column[Any]]) -> None:
        if dialect.paramstyle == "numeric_dollar":  # asyncpg: $1, $2, ...
            parts = sql.split("?")
            sql = parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], 1))
        self.sql = sql
        self._width = len(columns)
        processors = [bind_processor(column, dialect) for column in columns]
        # Only the columns that need converting are visited, row by row.
        self._processors: list[tuple[int, Callable[[Any], Any]]] = [
            (i, proc) for i, proc in enumerate(processors) if proc is not None
        ]

    async def run(self, conn: DriverSQL, rows: list[tuple[Any, ...]]) -> None:
        await self.execute(conn, self.bind(rows))

    def bind(self, rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """The rows' values as the driver takes them. Separate from ``execute`` so that it
        can happen before a lock is taken: it is about half of a write's time."""
        converted: list[tuple[Any, ...]] = []
        for row in rows:
            if len(row) != self._width:
                raise ValueError(f"{len(row)} values for {self._width} columns: {self.sql}")
            values = list(row)
            for i, proc in self._processors:
                if values[i] is not None:
                    values[i] = proc(values[i])
            converted.append(tuple(values))
        return converted

    async def execute(self, conn: DriverSQL, bound: list[tuple[Any, ...]]) -> None:
        """Run the statement over rows that ``bind`` converted."""
        if bound:
            await conn.executemany(self.sql, bound)


def bind_processor(column: Column[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    """The column's bind processor: SQLAlchemy's own, except for the two types every order
    write converts on SQLite, where a direct equivalent costs a fraction (SQLAlchemy's
    DATETIME builds a dict and %-formats it; a TypeDecorator adds a call per layer).
    ``tests/unit/test_bind_processors.py`` holds them to SQLAlchemy's output."""
    if dialect.name == "sqlite":
        if isinstance(column.type, t.UtcDateTime):
            return t.sqlite_timestamp
        if isinstance(column.type, t.ExactDecimal):
            return t.sqlite_decimal
    processor: Callable[[Any], Any] | None = column.type.dialect_impl(dialect).bind_processor(
        dialect
    )
    return processor


class RawLookup:
    """A SELECT of the rows whose key columns take any of the given values, one list per
    column (SQLAlchemy's expanding parameters and result processing cost more than the
    query itself). Rows come back as the driver gives them: see ``rows.order_from_values``.

    On PostgreSQL each list is one array parameter (``col = ANY($1)``): one statement text
    whatever the batch size, prepared once by asyncpg and planned as an index lookup. An IN
    list of its own length per call was a new statement to prepare and plan each time, and
    the applier's batch lookup (locking its rows) took 25 ms on average. SQLite takes one
    IN list per column, rendered per call."""

    def __init__(
        self, dialect: Dialect, select_sql: str, columns: Sequence[str], lock: bool = False
    ) -> None:
        self._dollar = dialect.paramstyle == "numeric_dollar"
        self._select = select_sql
        self._columns = columns
        self._suffix = " FOR UPDATE" if lock and dialect.name == "postgresql" else ""
        self._arrays = dialect.name == "postgresql"
        if self._arrays:
            where = " AND ".join(f"{c} = ANY(${i})" for i, c in enumerate(columns, 1))
            self._array_sql = f"{select_sql} WHERE {where}{self._suffix}"

    async def run(self, conn: DriverSQL, *values: Sequence[Any]) -> list[tuple[Any, ...]]:
        if self._arrays:
            arrays = [list(column_values) for column_values in values]
            return await conn.fetch(self._array_sql, arrays)
        clauses, params = [], []
        for column, column_values in zip(self._columns, values, strict=True):
            marks = []
            for value in column_values:
                params.append(value)
                marks.append(f"${len(params)}" if self._dollar else "?")
            clauses.append(f"{column} IN ({', '.join(marks)})")
        sql = f"{self._select} WHERE {' AND '.join(clauses)}{self._suffix}"
        return await conn.fetch(sql, params)


def _lookup(
    dialect: Dialect, table: Table, names: Sequence[str], where: Sequence[str], lock: bool
) -> RawLookup:
    return RawLookup(dialect, f"SELECT {', '.join(names)} FROM {table.name}", where, lock)


def _insert(dialect: Dialect, table: Table, names: Sequence[str], suffix: str = "") -> RawWrite:
    columns = [table.c[name] for name in names]
    marks = ", ".join("?" for _ in names)
    sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({marks}){suffix}"
    return RawWrite(dialect, sql, columns)


def _update(dialect: Dialect, table: Table, names: Sequence[str], key: str) -> RawWrite:
    assignments = ", ".join(f"{name} = ?" for name in names)
    sql = f"UPDATE {table.name} SET {assignments} WHERE {key} = ?"
    return RawWrite(dialect, sql, [*(table.c[name] for name in names), table.c[key]])


ORDER_COLUMNS = OrderRow._fields
EVENT_COLUMNS = EventRow._fields
FILL_COLUMNS = FillRow._fields
POSITION_COLUMNS = PositionRow._fields
ORDER_FILL_STATE = FillStateRow._fields[:-1]  # set by id, the last field


class Statements:
    def __init__(self, dialect: Dialect) -> None:
        # Keys are matched as "a IN (...) AND b IN (...)", not "(a, b) IN (VALUES ...)":
        # SQLite answers the first from the (a, b) index and scans the table for the second.
        # Callers keep only the exact pairs they asked for.
        order_key = ("account", "client_order_id")
        self.taken_client_ids = _lookup(dialect, t.orders, order_key, order_key, lock=False)
        self.statuses_by_id = _lookup(dialect, t.orders, ("id", "status"), ("id",), lock=True)
        self.orders_by_key = _lookup(dialect, t.orders, ORDER_COLUMNS, order_key, lock=True)
        self.known_fills = _lookup(dialect, t.fills, ("exec_id",), ("exec_id",), lock=False)
        self.positions_by_key = _lookup(
            dialect, t.positions, POSITION_COLUMNS, ("account", "symbol"), lock=True
        )
        # The same reads without locks: to plan a batch of reports before locking its rows.
        self.orders_by_key_unlocked = _lookup(
            dialect, t.orders, ORDER_COLUMNS, order_key, lock=False
        )
        self.positions_by_key_unlocked = _lookup(
            dialect, t.positions, POSITION_COLUMNS, ("account", "symbol"), lock=False
        )

        self.insert_orders = _insert(dialect, t.orders, ORDER_COLUMNS)
        self.insert_events = _insert(dialect, t.order_events, EVENT_COLUMNS)
        self.insert_fills = _insert(dialect, t.fills, FILL_COLUMNS)
        # A transition, and the answer given for it when there is one (NULL keeps the
        # stored answer): one row write per order instead of two.
        self.update_status = RawWrite(
            dialect,
            "UPDATE orders SET status = ?, updated_at = ?, reject_reason = ?,"
            " ack_status = COALESCE(?, ack_status), ack_body = COALESCE(?, ack_body)"
            " WHERE id = ?",
            [
                t.orders.c[name]
                for name in (
                    "status",
                    "updated_at",
                    "reject_reason",
                    "ack_status",
                    "ack_body",
                    "id",
                )
            ],
        )
        # The answer to a move that the broker's own report overtook: kept for replays, and
        # the order's updated_at rises to the answer's, so that the order never reads as
        # older than an answer already given for it.
        self.update_ack = RawWrite(
            dialect,
            "UPDATE orders SET ack_status = ?, ack_body = ?,"
            " updated_at = CASE WHEN updated_at < ? THEN ? ELSE updated_at END WHERE id = ?",
            [
                t.orders.c[name]
                for name in ("ack_status", "ack_body", "updated_at", "updated_at", "id")
            ],
        )
        self.update_fill_state = _update(dialect, t.orders, ORDER_FILL_STATE, "id")
        self.upsert_positions = _insert(
            dialect,
            t.positions,
            POSITION_COLUMNS,
            " ON CONFLICT (account, symbol) DO UPDATE SET qty = excluded.qty,"
            " avg_price = excluded.avg_price, realized_pnl = excluded.realized_pnl,"
            " updated_at = excluded.updated_at",
        )
        self.upsert_cursor = _insert(
            dialect,
            t.stream_cursors,
            ("name", "position"),
            " ON CONFLICT (name) DO UPDATE SET position = excluded.position",
        )
