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

from sqlalchemy import Engine, bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.domain.executions import Execution
from app.storage.sql import tables as t
from app.storage.sql.execution_log import REPORTS, report_of

# Events taken per round; a longer backlog goes over several.
BATCH = 500

_e = t.order_events
_SINCE = REPORTS.where(_e.c.id > bindparam("last")).order_by(_e.c.id).limit(BATCH)
_NEWEST_ID = text("SELECT coalesce(max(id), 0) FROM order_events")


def _number_and_read() -> str:
    """PostgreSQL: number up to BATCH unnumbered events, and select their reports as
    ``REPORTS`` does (same columns, same names)."""
    columns = [
        *(f"o.{c.name}" for c in t.orders.c),
        "n.id AS e_id",
        "n.seq AS e_seq",
        "n.from_status AS e_from",
        "n.to_status AS e_to",
        "n.reason AS e_reason",
        "n.exec_id AS e_exec_id",
        "n.at AS e_at",
        "n.cum_qty AS e_cum_qty",
        "n.avg_price AS e_avg_price",
        "n.position_qty AS e_position_qty",
        "f.qty AS f_qty",
        "f.price AS f_price",
    ]
    return (
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
        f" SELECT {', '.join(columns)} FROM n JOIN orders AS o ON o.id = n.order_id"
        " LEFT JOIN fills AS f ON f.exec_id = n.exec_id ORDER BY n.id"
    )


class CommittedReports:
    """One caller at a time (the execution publisher). ``engine``: the order log's kind
    (``create_writer_engine``): on SQLite synchronous, on PostgreSQL one connection."""

    def __init__(self, engine: Engine | AsyncEngine) -> None:
        self._engine = engine
        self._numbered = text(_number_and_read()).columns(*REPORTS.selected_columns)
        self._last_id: int | None = None  # SQLite: the newest event id seen

    def forget(self) -> None:
        """Start again from the log's newest event (SQLite): what was committed before and
        not published is the repair's to publish."""
        self._last_id = None

    async def take(self) -> list[Execution]:
        """The reports of the events numbered since the last call, each account's in order."""
        if isinstance(self._engine, AsyncEngine):
            async with self._engine.begin() as conn:
                rows = (await conn.execute(self._numbered)).mappings().all()
            return [report_of(row) for row in rows]
        with self._engine.connect() as conn:
            if self._last_id is None:
                self._last_id = int(conn.execute(_NEWEST_ID).scalar_one())
                return []
            rows = conn.execute(_SINCE, {"last": self._last_id}).mappings().all()
        if rows:
            self._last_id = int(rows[-1]["e_id"])
        return [report_of(row) for row in rows]
