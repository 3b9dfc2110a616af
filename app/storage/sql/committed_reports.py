"""The reports of the order log's newly committed events, read by the one process that
publishes them, in one statement per round on a connection of its own.

SQLite numbers each event as it commits (``executions``), and its event ids grow in commit
order (one write lock for every process): what is new lies past the last id seen. The read
runs on the event loop, on the stdlib connection (a few rows take microseconds; through a
thread each round cost more than the reports it read).

PostgreSQL commits events unnumbered; one statement numbers them, in event id order, and
returns their reports. Within an order that is the order its events happened in: a later
event's transaction began after the earlier one committed, so the later one has the larger
id, and a snapshot that holds it holds the earlier one too. The events are locked while
they are numbered (``FOR UPDATE``) and the numbers come from ``account_sequences`` in the
same statement, so two processes numbering at once (a lease changing hands) never give one
event two numbers or one number twice.
"""

from __future__ import annotations

import contextlib
import sqlite3

import asyncpg
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection

from app.domain.executions import Execution
from app.storage.sql.execution_log import (
    REPORT_COLUMNS_SQL,
    REPORT_ID,
    REPORT_JOINS_SQL,
    report_of,
)

# Events taken per round; a longer backlog goes over several.
BATCH = 500

_SINCE = (
    f"SELECT {REPORT_COLUMNS_SQL} FROM order_events AS n {REPORT_JOINS_SQL}"
    f" WHERE n.id > ? ORDER BY n.id LIMIT {BATCH}"
)
_NEWEST_ID = "SELECT coalesce(max(id), 0) FROM order_events"
# Number up to BATCH unnumbered events (each with its rank ``k`` among its account's ``c``)
# and select their reports.
_NUMBER_AND_READ = (
    "WITH picked AS (SELECT id, account,"
    " row_number() OVER (PARTITION BY account ORDER BY id) AS k,"
    " count(*) OVER (PARTITION BY account) AS c"
    " FROM (SELECT id, account FROM order_events WHERE seq IS NULL"
    f" ORDER BY id LIMIT {BATCH} FOR UPDATE) AS u),"
    # Accounts in sorted order: two numbering at once lock them in one order.
    " taken AS (INSERT INTO account_sequences AS s (account, last_seq)"
    " SELECT account, max(c) FROM picked GROUP BY account ORDER BY account"
    " ON CONFLICT (account) DO UPDATE SET last_seq = s.last_seq + excluded.last_seq"
    " RETURNING account, last_seq),"
    " n AS (UPDATE order_events AS e SET seq = taken.last_seq - p.c + p.k"
    " FROM picked AS p JOIN taken ON taken.account = p.account"
    " WHERE e.id = p.id RETURNING e.*)"
    f" SELECT {REPORT_COLUMNS_SQL} FROM n {REPORT_JOINS_SQL} ORDER BY n.id"
)


class CommittedReports:
    """One caller at a time (the execution publisher). ``engine``: one of the order log's
    kind (``create_writer_engine``), whose one connection this keeps."""

    def __init__(self, engine: Engine | AsyncEngine) -> None:
        self._engine = engine
        self._connection: PoolProxiedConnection | None = None
        self._last_id: int | None = None  # SQLite: the newest event id seen

    def forget(self) -> None:
        """Start again from the log's newest event (SQLite): what was committed before and
        not published is the repair's to publish."""
        self._last_id = None

    async def take(self) -> list[Execution]:
        """The reports of the events numbered since the last call, each account's in order."""
        try:
            if isinstance(self._engine, AsyncEngine):
                return await self._number_new()
            return self._past_last_seen()
        except BaseException:
            await self.close()  # its state is unknown: a new one next time
            raise

    async def close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            with contextlib.suppress(Exception):
                connection.invalidate()

    def _past_last_seen(self) -> list[Execution]:
        assert isinstance(self._engine, Engine)
        if self._connection is None:
            self._connection = self._engine.raw_connection()
        raw: sqlite3.Connection = self._connection.dbapi_connection  # type: ignore[assignment]
        if self._last_id is None:
            self._last_id = int(raw.execute(_NEWEST_ID).fetchone()[0])
            return []
        rows = raw.execute(_SINCE, (self._last_id,)).fetchall()
        if rows:
            self._last_id = int(rows[-1][REPORT_ID])
        return [report_of(row) for row in rows]

    async def _number_new(self) -> list[Execution]:
        assert isinstance(self._engine, AsyncEngine)
        if self._connection is None:
            self._connection = await self._engine.raw_connection()
        raw: asyncpg.Connection = self._connection.driver_connection
        return [report_of(row) for row in await raw.fetch(_NUMBER_AND_READ)]
