"""Execution reports from the order log to Redis Streams: published after each commit,
repaired from the log when a publish was lost.

The process that commits a batch publishes its reports at once, off the order path (a
queue drained by one task). If it dies between commit and publish, or Redis loses its
streams, the repair (one process at a time, by lease) finds each account whose stream is
behind the log and has not moved for a round, and publishes what is missing from the log.
Subscribers do not depend on either: they check every number and read a gap from the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError

from app.domain.executions import Execution
from app.storage.redis.execution_stream import ExecutionStreamStore
from app.storage.redis.lease import Lease
from app.storage.sql.execution_log import ExecutionLog

log = logging.getLogger(__name__)

# Reports republished per account per round: a long backlog goes over several rounds.
REPAIR_BATCH = 1000
TRIM_INTERVAL_S = 60.0
_UNAVAILABLE = (RedisError, OSError, TimeoutError, DBAPIError)


class ExecutionPublisher:
    """Publishes what the order log committed (``offer`` is its ``on_commit``)."""

    def __init__(self, store: ExecutionStreamStore) -> None:
        self._store = store
        self._pending: list[Execution] = []
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def offer(self, executions: list[Execution]) -> None:
        self._pending.extend(executions)
        self._ready.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="execution-publisher")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._pending:  # committed and waiting: published now, if Redis answers
            batch, self._pending = self._pending, []
            with contextlib.suppress(*_UNAVAILABLE):
                await self._store.publish(batch)

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            batch, self._pending = self._pending, []
            try:
                await self._store.publish(batch)
            except _UNAVAILABLE as exc:
                # Committed, not published: the repair publishes them from the log.
                log.warning("%d execution reports not published: %r", len(batch), exc)


class StreamRepair:
    """Publishes from the order log what the streams lack (one process, by lease)."""

    def __init__(
        self,
        store: ExecutionStreamStore,
        executions: ExecutionLog,
        lease: Lease,
        *,
        max_length: int,
        max_age_s: float,
        interval_s: float = 1.0,
    ) -> None:
        self._store = store
        self._log = executions
        self._lease = lease
        self._max_length = max_length
        self._max_age_s = max_age_s
        self._interval_s = interval_s
        self._previous: dict[str, int] = {}  # each stream's newest seq a round ago
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="execution-stream-repair")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._lease.release(), 1.0)

    async def _run(self) -> None:
        next_trim = time.monotonic() + TRIM_INTERVAL_S
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                if not await self._lease.hold():
                    self._previous = {}
                    continue
                await self.repair_once()
                if time.monotonic() >= next_trim:
                    next_trim = time.monotonic() + TRIM_INTERVAL_S
                    cutoff_ms = int((time.time() - self._max_age_s) * 1000)
                    await self._store.trim(list(self._previous), cutoff_ms)
            except _UNAVAILABLE as exc:
                log.warning("execution stream repair failed: %r", exc)

    async def repair_once(self) -> int:
        """Republish where a stream is behind the log and has not moved since the last
        round (a publish may just be under way); how many reports were published."""
        in_log = await self._log.newest()
        in_stream = await self._store.newest(in_log)
        repaired = 0
        for account, last in in_log.items():
            top = in_stream[account]
            unmoved = self._previous.get(account) == top
            if top > last and unmoved:
                # Ahead of the log a round after it was seen (a report is committed before
                # it is published, so the log would have caught up): the stream outlived
                # its database (restored, or replaced). Started again from the log.
                log.warning("execution stream of %s is ahead of the order log: rebuilt", account)
                await self._store.drop(account)
                top = 0
            if top < last and unmoved:
                start = max(top, last - self._max_length)
                missing = await self._log.after(account, start, REPAIR_BATCH)
                await self._store.publish(missing, repair=True)
                repaired += len(missing)
        if repaired:
            log.info("republished %d execution reports from the order log", repaired)
        self._previous = in_stream
        return repaired
