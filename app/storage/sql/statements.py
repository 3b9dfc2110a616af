"""The order log's statements, prepared once per dialect.

Writes are plain SQL run with the driver's ``executemany`` on tuples, values converted by
the columns' own SQLAlchemy bind processors (so SQLite text decimals and timestamps stay
exactly what the SQLAlchemy readers expect). Reads are plain SQL too, one IN list per key
column, their rows returned as the driver gives them (``rows.order_from_values`` converts
orders). Building, compiling and result-processing SQLAlchemy statements per batch cost
more CPU than the database work itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from typing import Any

from sqlalchemy import Column, Dialect, Table

from app.storage.sql import tables as t
from app.storage.sql.drivers import DriverSQL
from app.storage.sql.rows import EventRow, FillRow, FillStateRow, OrderRow, PositionRow


class RawWrite:
    """One INSERT/UPDATE over rows (tuples in column order): ``executemany``, or on
    PostgreSQL, where ``array_sql`` is given, one statement over one array per column
    (``unnest``). PostgreSQL executes a statement per row of an ``executemany``, each with
    its own plan; one statement over arrays is planned once for the batch.

    ``unique``: the positions of the columns whose values no two rows of one statement may
    share (an UPDATE's key, an upsert's conflict key): one statement would update such a
    row once, or fail, where row by row each applies in turn. Rows that share them go row by
    row."""

    def __init__(
        self,
        dialect: Dialect,
        sql: str,
        columns: Sequence[Column[Any]],
        array_sql: str | None = None,
        unique: Sequence[int] = (),
    ) -> None:
        if dialect.paramstyle == "numeric_dollar":  # asyncpg: $1, $2, ...
            parts = sql.split("?")
            sql = parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], 1))
        self.sql = sql
        self.array_sql = array_sql
        self._unique = tuple(unique)
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
        if not bound:
            return
        if self.array_sql is not None and self._distinct(bound):
            await conn.fetch(self.array_sql, [list(column) for column in zip(*bound, strict=True)])
        else:
            await conn.executemany(self.sql, bound)

    def _distinct(self, bound: list[tuple[Any, ...]]) -> bool:
        if not self._unique or len(bound) == 1:
            return True
        keys = {tuple(row[i] for i in self._unique) for row in bound}
        return len(keys) == len(bound)


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
    """A SELECT of the rows with the given keys (one tuple of values per key, in the order
    of the key columns). Rows come back as the driver gives them (SQLAlchemy's expanding
    parameters and result processing cost more than the query itself): see
    ``rows.order_from_values``.

    On PostgreSQL the keys go as one array parameter per key column: one statement text
    whatever the batch size, prepared once by asyncpg. A one-column key is ``col = ANY($1)``;
    a key of several columns is a join with its pairs (``unnest``), which only the key's
    own unique index answers well: ``a = ANY($1) AND b = ANY($2)`` was planned, on an order
    log not yet analyzed, as a scan of the account's every order (see docs/performance.md).
    An IN list of its own length per call was a new statement to prepare and plan each
    time. SQLite takes one IN list per column, rendered per call; callers keep only the
    exact keys they asked for."""

    def __init__(
        self, dialect: Dialect, table: Table, names: Sequence[str], key: Sequence[str], lock: bool
    ) -> None:
        self._select = f"SELECT {', '.join(names)} FROM {table.name}"
        self._key = key
        postgres = dialect.name == "postgresql"
        self.array_sql: str | None = None  # PostgreSQL's: SQLite's is rendered per call
        if postgres and len(key) == 1:
            lock_clause = " FOR UPDATE" if lock else ""
            self.array_sql = f"{self._select} WHERE {key[0]} = ANY($1){lock_clause}"
        elif postgres:
            arrays = _array_parameters([table.c[c] for c in key], dialect)
            on = " AND ".join(f"t.{c} = k.{c}" for c in key)
            columns = ", ".join(f"t.{name}" for name in names)
            lock_clause = " FOR UPDATE OF t" if lock else ""
            self.array_sql = (
                f"SELECT {columns} FROM unnest({arrays}) AS k({', '.join(key)})"
                f" JOIN {table.name} t ON {on}{lock_clause}"
            )

    async def run(
        self, conn: DriverSQL, keys: Collection[tuple[Any, ...]]
    ) -> list[tuple[Any, ...]]:
        if not keys:
            return []
        columns = list(zip(*keys, strict=True))
        if len(columns) != len(self._key):
            raise ValueError(f"keys of {len(columns)} values for {self._key}")
        if self.array_sql is not None:
            return await conn.fetch(self.array_sql, [list(column) for column in columns])
        clauses, params = [], []
        for name, values in zip(self._key, columns, strict=True):
            distinct = sorted(set(values))
            params.extend(distinct)
            clauses.append(f"{name} IN ({', '.join('?' for _ in distinct)})")
        sql = f"{self._select} WHERE {' AND '.join(clauses)}"
        return await conn.fetch(sql, params)


def unbounded_type(column: Column[Any], dialect: Dialect) -> str:
    """The column's type without length or precision: a cast to VARCHAR(16) would cut a
    longer value short, where the column refuses it."""
    return re.sub(r"\(.*?\)", "", column.type.dialect_impl(dialect).compile(dialect))


def _lookup(
    dialect: Dialect, table: Table, names: Sequence[str], key: Sequence[str], lock: bool
) -> RawLookup:
    return RawLookup(dialect, table, names, key, lock)


def _insert(
    dialect: Dialect,
    table: Table,
    names: Sequence[str],
    suffix: str = "",
    conflict_key: Sequence[str] = (),
) -> RawWrite:
    """An INSERT (an upsert where ``suffix`` says ON CONFLICT on ``conflict_key``)."""
    columns = [table.c[name] for name in names]
    marks = ", ".join("?" for _ in names)
    sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({marks}){suffix}"
    array_sql = (
        f"INSERT INTO {table.name} ({', '.join(names)})"
        f" SELECT * FROM unnest({_array_parameters(columns, dialect)}){suffix}"
        if dialect.name == "postgresql"
        else None
    )
    unique = [names.index(name) for name in conflict_key]
    return RawWrite(dialect, sql, columns, array_sql, unique)


def _update(dialect: Dialect, table: Table, names: Sequence[str], key: str) -> RawWrite:
    """An UPDATE of ``names`` by ``key`` (the table's own key: one row each)."""
    columns = [*(table.c[name] for name in names), table.c[key]]
    assignments = ", ".join(f"{name} = ?" for name in names)
    sql = f"UPDATE {table.name} SET {assignments} WHERE {key} = ?"
    array_sql = (
        f"UPDATE {table.name} AS t SET {', '.join(f'{name} = k.{name}' for name in names)}"
        f" FROM unnest({_array_parameters(columns, dialect)}) AS k({', '.join(names)}, {key})"
        f" WHERE t.{key} = k.{key}"
        if dialect.name == "postgresql"
        else None
    )
    return RawWrite(dialect, sql, columns, array_sql, unique=[len(names)])


def _array_parameters(columns: Sequence[Column[Any]], dialect: Dialect) -> str:
    """$1::type[], $2::type[], ...: one array parameter per column (PostgreSQL)."""
    return ", ".join(f"${i}::{unbounded_type(c, dialect)}[]" for i, c in enumerate(columns, 1))


ORDER_COLUMNS = OrderRow._fields
EVENT_COLUMNS = EventRow._fields
FILL_COLUMNS = FillRow._fields
POSITION_COLUMNS = PositionRow._fields
ORDER_FILL_STATE = FillStateRow._fields[:-1]  # set by id, the last field


class Statements:
    def __init__(self, dialect: Dialect) -> None:
        # On SQLite keys are matched as "a IN (...) AND b IN (...)", not "(a, b) IN
        # (VALUES ...)": SQLite answers the first from the (a, b) index and scans the table
        # for the second.
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
            conflict_key=("account", "symbol"),
        )
        self.upsert_cursor = _insert(
            dialect,
            t.stream_cursors,
            ("name", "position"),
            " ON CONFLICT (name) DO UPDATE SET position = excluded.position",
            conflict_key=("name",),
        )
