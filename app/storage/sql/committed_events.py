"""The order log's newly committed events, found by the one process that publishes them.

SQLite numbers each event as it commits (``executions``), and its event ids grow in commit
order (one write lock for every process): what is new lies past the last id seen.

PostgreSQL commits events unnumbered; they are numbered here, after their commit, in event
id order. Within an order that is the order its events happened in: a later event's
transaction began after the earlier one committed, so the later one has the larger id, and
a snapshot that holds it holds the earlier one too. The events are locked while they are
numbered (``FOR UPDATE``) and the numbers come from ``account_sequences`` in the same
transaction, so two processes numbering at once (a lease changing hands) never give one
event two numbers or one number twice.
"""

from __future__ import annotations

from collections import Counter

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.storage.sql.drivers import AsyncpgSQL
from app.storage.sql.executions import SequenceTake, number

# Events taken per call; a longer backlog goes over several.
BATCH = 5000

_UNNUMBERED = (
    "SELECT id, account FROM order_events WHERE seq IS NULL ORDER BY id LIMIT $1 FOR UPDATE"
)
_SET_NUMBERS = (
    "UPDATE order_events AS e SET seq = v.seq"
    " FROM unnest($1::bigint[], $2::bigint[]) AS v(id, seq) WHERE e.id = v.id"
)


class CommittedEvents:
    """One caller at a time (the execution publisher)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._take_seqs = SequenceTake(engine.dialect)
        self._last_id: int | None = None  # SQLite: the newest event id seen

    def forget(self) -> None:
        """Start again from the log's newest event (SQLite): what was committed before and
        not published is the repair's to publish."""
        self._last_id = None

    async def take(self) -> list[int]:
        """The ids of the events numbered since the last call, oldest first."""
        if self._postgres:
            return await self._number_new()
        return await self._past_last_seen()

    async def _past_last_seen(self) -> list[int]:
        async with self._engine.connect() as conn:
            if self._last_id is None:
                newest = await conn.execute(text("SELECT coalesce(max(id), 0) FROM order_events"))
                self._last_id = int(newest.scalar_one())
                return []
            rows = await conn.execute(
                text("SELECT id FROM order_events WHERE id > :last ORDER BY id LIMIT :n"),
                {"last": self._last_id, "n": BATCH},
            )
            ids = [int(event_id) for (event_id,) in rows]
        if ids:
            self._last_id = ids[-1]
        return ids

    async def _number_new(self) -> list[int]:
        async with self._engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            assert raw is not None
            async with raw.transaction():
                rows = await raw.fetch(_UNNUMBERED, BATCH)
                if not rows:
                    return []
                ids = [int(row[0]) for row in rows]
                accounts = [str(row[1]) for row in rows]
                last = await self._take_seqs.run(AsyncpgSQL(raw), dict(Counter(accounts)))
                await raw.execute(_SET_NUMBERS, ids, number(accounts, last))
        return ids
