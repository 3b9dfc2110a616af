"""Each gateway process's reader of the execution streams, fanning reports out to its
subscribers.

One task per process reads every stream that a local subscriber wants, with one blocking
``XREAD``, renders each report once, and puts it into the queue of each subscription that
wants it. A subscription's queue is bounded: when it is full the subscription is marked
overflowed (its connection is closed, and it can resume), so a slow subscriber never holds
up the reader, another subscriber, or the order path. Adding a stream to the read wakes the
reader through a stream of its own, so the new stream is read from where it stood when the
subscription was made: nothing published after that is missed.

Subscribers of every account (an admin's) are served from each account's stream: the
accounts the order log knows are looked up every ``DISCOVER_S``, and one first seen then
is read from its stream's start (all of it is new since the subscription).

The hub delivers what the streams hold; the numbering is checked, and gaps filled from the
order log, by each connection (``app.services.stream_session``).

The market-data and signal streams are read the same way while a local subscriber wants
them (the ``marketdata`` and ``signals`` channels): each entry rendered once, live only,
with no numbering to keep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Iterable
from typing import NamedTuple

import orjson
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError

from app.domain.executions import Execution
from app.domain.views import render_execution
from app.redisio.multiplexed import MultiplexedRedis, pairs
from app.storage.redis.execution_stream import ExecutionStreamStore, entry_of
from app.storage.redis.keys import MarketDataKeys, StreamKeys
from app.storage.sql.execution_log import ExecutionLog

log = logging.getLogger(__name__)

READ_COUNT = 1000
RETRY_S = 0.5
# How often the streams read are checked for having been rebuilt below where the hub
# stands (see ``_rewind_rebuilt``), and new accounts looked for (subscribers of them all).
REWIND_CHECK_S = 2.0
DISCOVER_S = 1.0
_UNAVAILABLE = (RedisError, OSError, TimeoutError, DBAPIError)


class Report(NamedTuple):
    """A report, and its JSON as subscribers are sent it (rendered once for all)."""

    account: str
    seq: int
    text: str
    execution: Execution


def report_of(execution: Execution) -> Report:
    return Report(execution.account, execution.seq, render_execution(execution), execution)


class Broadcast(NamedTuple):
    """A market-data batch or a signal cycle, as every subscriber of its channel gets it
    (live only: what was published before the subscription is read over REST)."""

    channel: str
    text: str


# The broadcast channels and the stream each is read from.
BROADCAST_STREAMS = {"marketdata": MarketDataKeys.events, "signals": MarketDataKeys.signals}
BROADCAST_KEYS = frozenset(BROADCAST_STREAMS.values())


class Subscription:
    """What one connection wants: some accounts' reports, or every account's (``None``),
    and the broadcast channels it takes."""

    def __init__(
        self,
        accounts: frozenset[str] | None,
        queue: asyncio.Queue[object],
        overflowed: asyncio.Event,
        broadcasts: frozenset[str] = frozenset(),
    ) -> None:
        self.accounts = accounts
        self.queue = queue
        self.overflowed = overflowed
        self.broadcasts = broadcasts

    def put(self, report: Report | Broadcast) -> None:
        if self.overflowed.is_set():
            return
        try:
            self.queue.put_nowait(report)
        except asyncio.QueueFull:
            self.overflowed.set()


class StreamHub:
    def __init__(
        self,
        store: ExecutionStreamStore,
        executions: ExecutionLog,
        redis: MultiplexedRedis,
        reader: MultiplexedRedis,
        block_ms: int = 5000,
    ) -> None:
        """``reader``: a client of its own for the blocking read (its reply timeout longer
        than ``block_ms``)."""
        self._store = store
        self._log = executions
        self._redis = redis
        self._reader = reader
        self._block_ms = block_ms
        self._wake_key = StreamKeys.wake(f"{secrets.token_hex(6)}")
        self._by_account: dict[str, set[Subscription]] = {}
        self._of_all: set[Subscription] = set()
        self._cursors: dict[str, bytes] = {}  # account -> the last entry id read
        self._broadcast_subscribers: dict[str, set[Subscription]] = {}  # channel -> them
        self._broadcast_cursors: dict[str, bytes] = {}  # stream key -> the last entry id read
        self._wake_cursor = b"0-0"
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="stream-hub")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await self._redis.execute("DEL", self._wake_key)

    async def subscribe(self, subscription: Subscription) -> dict[str, int]:
        """Deliver to ``subscription`` everything published from now on. Answers the
        accounts it covers now and each one's newest report in the order log (for every
        account: those the log knows)."""
        # Registered before anything is awaited: whatever the hub reads from now on reaches
        # it, including what it reads while the numbers below are being asked for.
        await self._subscribe_broadcasts(subscription)
        if subscription.accounts is None:
            self._of_all.add(subscription)
            newest = await self._log.newest()
            await self._read_from_now(newest)
        else:
            for account in subscription.accounts:
                self._by_account.setdefault(account, set()).add(subscription)
            await self._read_from_now(subscription.accounts)
            newest = await self._log.newest(subscription.accounts)
        return newest

    async def _subscribe_broadcasts(self, subscription: Subscription) -> None:
        fresh = []
        for channel in subscription.broadcasts:
            self._broadcast_subscribers.setdefault(channel, set()).add(subscription)
            key = BROADCAST_STREAMS[channel]
            if key not in self._broadcast_cursors:
                fresh.append(key)
        if not fresh:
            return
        # From the newest entry now: live from here on.
        newest = await self._redis.execute_many(
            [("XREVRANGE", key, "+", "-", "COUNT", 1) for key in fresh]
        )
        for key, entries in zip(fresh, newest, strict=True):
            self._broadcast_cursors.setdefault(key, entries[0][0] if entries else b"0-0")
        await self._redis.execute("XADD", self._wake_key, "MAXLEN", "~", 10, "*", "w", 1)

    async def _read_from_now(self, accounts: Iterable[str]) -> None:
        fresh = [a for a in accounts if a not in self._cursors]
        if not fresh:
            return
        newest = await self._store.newest(fresh)
        for account in fresh:
            # Unless another subscription began reading it meanwhile: never moved forward
            # past what the hub has not delivered yet.
            self._cursors.setdefault(account, f"{newest[account]}-0".encode())
        await self._redis.execute("XADD", self._wake_key, "MAXLEN", "~", 10, "*", "w", 1)

    def unsubscribe(self, subscription: Subscription) -> None:
        self._of_all.discard(subscription)
        for channel in subscription.broadcasts:
            subscribers = self._broadcast_subscribers.get(channel)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._broadcast_subscribers[channel]
                    self._broadcast_cursors.pop(BROADCAST_STREAMS[channel], None)
        for account in subscription.accounts or ():
            subscribers = self._by_account.get(account)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._by_account[account]
        for account in list(self._cursors):
            if not self._of_all and account not in self._by_account:
                del self._cursors[account]

    async def _run(self) -> None:
        now = time.monotonic()
        next_rewind, next_discovery = now + REWIND_CHECK_S, now + DISCOVER_S
        while True:
            now = time.monotonic()
            try:
                if now >= next_rewind:
                    next_rewind = now + REWIND_CHECK_S
                    await self._rewind_rebuilt()
                if self._of_all and now >= next_discovery:
                    next_discovery = now + DISCOVER_S
                    await self._discover()
                keys = [
                    self._wake_key,
                    *self._broadcast_cursors,
                    *map(StreamKeys.executions, self._cursors),
                ]
                ids = [
                    self._wake_cursor,
                    *self._broadcast_cursors.values(),
                    *self._cursors.values(),
                ]
                block = (
                    min(self._block_ms, int(DISCOVER_S * 1000)) if self._of_all else self._block_ms
                )
                reply = await self._reader.execute(
                    "XREAD", "COUNT", READ_COUNT, "BLOCK", block, "STREAMS", *keys, *ids
                )
            except _UNAVAILABLE as exc:
                log.warning("execution stream read failed: %r; again in %.1f s", exc, RETRY_S)
                await asyncio.sleep(RETRY_S)
                continue
            for key, entries in reply or ():
                try:
                    self._deliver(key, entries)
                except Exception:  # entries it cannot read must not end every delivery
                    log.exception("stream entries of %r not delivered; skipped", key)
                    self._skip(key.decode(), entries[-1][0])

    async def _discover(self) -> None:
        """Accounts that appeared since subscribers of every account came: read from their
        streams' start."""
        for account in await self._log.newest():
            if account not in self._cursors:
                self._cursors[account] = b"0-0"

    async def _rewind_rebuilt(self) -> None:
        """A stream whose newest entry is below where the hub stands was rebuilt from the
        order log (it had outlived its database): read it again from its start. The
        sessions drop what they have already sent."""
        cursors = dict(self._cursors)
        newest = await self._store.newest(cursors)
        for account, cursor in cursors.items():
            if newest[account] < int(cursor.split(b"-", 1)[0]) and account in self._cursors:
                self._cursors[account] = b"0-0"

    def _deliver(self, key: bytes, entries: Iterable[tuple[bytes, list[bytes]]]) -> None:
        name = key.decode()
        if name in BROADCAST_KEYS:  # its subscribers may have left while it was read
            self._broadcast(name, entries)
            return
        last = None
        for entry_id, fields in entries:
            last = entry_id
            if name == self._wake_key:
                continue
            entry = entry_of(key, entry_id, fields)
            report = report_of(entry.execution)
            for subscription in self._by_account.get(entry.account, ()):
                subscription.put(report)
            for subscription in self._of_all:
                subscription.put(report)
        if last is None:
            return
        if name == self._wake_key:
            self._wake_cursor = last
        else:
            account = StreamKeys.account_of(name)
            if account in self._cursors:  # not if its last subscriber left meanwhile
                self._cursors[account] = last

    def _skip(self, name: str, last: bytes) -> None:
        """Read on past entries that could not be delivered."""
        if name in self._broadcast_cursors:
            self._broadcast_cursors[name] = last
        elif name == self._wake_key:
            self._wake_cursor = last
        elif name.endswith("}:exec") and StreamKeys.account_of(name) in self._cursors:
            self._cursors[StreamKeys.account_of(name)] = last

    def _broadcast(self, key: str, entries: Iterable[tuple[bytes, list[bytes]]]) -> None:
        channel = next(c for c, k in BROADCAST_STREAMS.items() if k == key)
        last = None
        for entry_id, fields in entries:
            last = entry_id
            message = broadcast_message(channel, pairs(fields))
            for subscription in self._broadcast_subscribers.get(channel, ()):
                subscription.put(message)
        if last is not None and key in self._broadcast_cursors:
            self._broadcast_cursors[key] = last


def broadcast_message(channel: str, fields: dict[bytes, bytes]) -> Broadcast:
    """A broadcast stream entry as its channel's subscribers get it."""
    if channel == "signals":
        cycle = orjson.loads(fields.get(b"cycle", b"{}"))
        body = {"type": "signals", "ts_us": cycle.get("ts_us"), "composite": cycle.get("composite")}
    else:
        ticks = orjson.loads(fields.get(b"ticks", b"[]"))
        body = {
            "type": "marketdata",
            "ticks": [{"symbol": s, "price": p, "size": q, "ts_us": ts} for s, p, q, ts in ticks],
            "bars": orjson.loads(fields.get(b"bars", b"[]")),
        }
    return Broadcast(channel, orjson.dumps(body).decode())
