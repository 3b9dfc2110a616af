"""Execution reports from the order log to Redis Streams: published by one process just
after each commit, repaired from the log when a publish was lost.

Every process that commits order events signals it (``CommitSignal``: an entry in a small
Redis stream), and does nothing else for the stream: rendering and publishing reports in
the committing processes cost the order path a quarter of its throughput on SQLite. The
publisher (one process at a time, by lease) wakes on the signal, takes the newly committed
events' reports from the log (on PostgreSQL numbering them first: ``committed_reports``)
and publishes them. If a publish is lost (the publisher died, Redis refused or
came back empty), the repair finds each account whose stream is behind the log and has not
moved for a round, and publishes what is missing from the log. Subscribers do not depend on
either: they check every number and read a gap from the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime

from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError

from app.redisio.multiplexed import MultiplexedRedis
from app.services.metrics import EXECUTION_REPORTS
from app.services.order_timing import Stage, record_stage
from app.storage.redis.execution_stream import ExecutionStreamStore
from app.storage.redis.keys import StreamKeys
from app.storage.redis.lease import Lease
from app.storage.sql.committed_reports import CommittedReports
from app.storage.sql.execution_log import ExecutionLog

log = logging.getLogger(__name__)

# Reports republished per account per round: a long backlog goes over several rounds.
REPAIR_BATCH = 1000
TRIM_INTERVAL_S = 60.0
# How often the lease is renewed while held (it lapses after 3 s), and tried while not.
LEASE_RENEW_S = 1.0
_UNAVAILABLE = (RedisError, OSError, TimeoutError, DBAPIError)


class CommitSignal:
    """Tells the publisher that this process committed order events (``notify`` is the
    order log's ``on_commit``): one signal in flight at a time, the commits made meanwhile
    told by the next."""

    def __init__(self, redis: MultiplexedRedis) -> None:
        self._redis = redis
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def notify(self) -> None:
        self._ready.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="commit-signal")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._ready.is_set():  # the last commits: told now, if Redis answers
            with contextlib.suppress(*_UNAVAILABLE):
                await self._send()

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            try:
                await self._send()
            except _UNAVAILABLE as exc:
                # The publisher also looks every repair interval without being told.
                log.warning("commit not signalled to the execution publisher: %r", exc)

    async def _send(self) -> None:
        await self._redis.execute("XADD", StreamKeys.committed, "MAXLEN", "~", 100, "*", "c", 1)


class ExecutionPublisher:
    """Publishes what the order log committed, woken by each ``CommitSignal``, and repairs
    the streams every ``interval_s`` (one process at a time, by lease)."""

    def __init__(
        self,
        store: ExecutionStreamStore,
        committed: CommittedReports,
        reader: MultiplexedRedis,
        lease: Lease,
        repair: StreamRepair,
        *,
        interval_s: float = 1.0,
    ) -> None:
        """``reader``: a connection of its own (its reads block)."""
        self._store = store
        self._committed = committed
        self._reader = reader
        self._lease = lease
        self._repair = repair
        self._interval_s = interval_s
        self._cursor = b"0-0"  # in the signal stream
        self._held_until = 0.0  # monotonic; the lease is held until then
        self._next_try = 0.0  # monotonic; when to try for the lease again
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="execution-publisher")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._lease.release(), 1.0)
        await self._committed.close()

    async def _run(self) -> None:
        next_repair, next_trim = time.monotonic(), time.monotonic() + TRIM_INTERVAL_S
        while True:
            try:
                await self._wait_for_commits()
                if not await self._holding():
                    continue
                await self.publish_new()
                now = time.monotonic()
                if now >= next_repair:
                    next_repair = now + self._interval_s
                    await self._repair.repair_once()
                if now >= next_trim:
                    next_trim = now + TRIM_INTERVAL_S
                    await self._repair.trim()
            except _UNAVAILABLE as exc:
                log.warning("execution publisher: %r", exc)
                await asyncio.sleep(self._interval_s)
            except Exception:  # e.g. the driver's own error: the repair will mend it
                log.exception("execution publisher failed; again in %.1f s", self._interval_s)
                await asyncio.sleep(self._interval_s)

    async def _wait_for_commits(self) -> None:
        """Until a commit is signalled, or ``interval_s`` passes."""
        block_ms = max(1, int(self._interval_s * 1000))
        reply = await self._reader.execute(
            "XREAD", "COUNT", 1000, "BLOCK", block_ms, "STREAMS", StreamKeys.committed, self._cursor
        )
        for _key, entries in reply or ():
            if entries:
                self._cursor = entries[-1][0]

    async def _holding(self) -> bool:
        """Whether this process holds the lease: renewed once a second, not every round."""
        now = time.monotonic()
        if now < self._held_until:
            return True
        if now < self._next_try:
            return False
        if await self._lease.hold():
            self._held_until = now + LEASE_RENEW_S
            return True
        self._next_try = now + LEASE_RENEW_S
        self._committed.forget()
        self._repair.forget()
        return False

    async def publish_new(self) -> int:
        """Publish the reports committed since the last call; how many."""
        reports = await self._committed.take()
        if reports:
            await self._store.publish(reports)
            published = datetime.now(UTC)
            for report in reports:  # the order event's time to its stream entry
                record_stage(Stage.PUBLISH, (published - report.at).total_seconds())
            EXECUTION_REPORTS.inc(len(reports))
        return len(reports)


class StreamRepair:
    """Publishes from the order log what the streams lack, and trims them by age (run by
    the publisher)."""

    def __init__(
        self,
        store: ExecutionStreamStore,
        executions: ExecutionLog,
        *,
        max_length: int,
        max_age_s: float,
    ) -> None:
        self._store = store
        self._log = executions
        self._max_length = max_length
        self._max_age_s = max_age_s
        self._previous: dict[str, int] = {}  # each stream's newest seq a round ago

    def forget(self) -> None:
        """Forget the last round (this process stopped repairing)."""
        self._previous = {}

    async def trim(self) -> None:
        cutoff_ms = int((time.time() - self._max_age_s) * 1000)
        await self._store.trim(list(self._previous), cutoff_ms)

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
                EXECUTION_REPORTS.inc(len(missing))
                repaired += len(missing)
        if repaired:
            log.info("republished %d execution reports from the order log", repaired)
        self._previous = in_stream
        return repaired
