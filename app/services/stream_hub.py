"""Each gateway process's reader of the execution streams, fanning reports out to its
subscribers.

One task per process reads every stream that a local subscriber wants, with one blocking
``XREAD``, and puts each entry into the queue of each subscription that wants it. A
subscription's queue is bounded: when it is full the subscription is marked overflowed
(its connection is closed, and it can resume), so a slow subscriber never holds up the
reader, another subscriber, or the order path. Adding a stream to the read wakes the
reader through a stream of its own, so the new stream is read from where it stood when the
subscription was made: nothing published after that is missed.

The hub delivers what the streams hold; the numbering is checked, and gaps filled from the
order log, by each connection (``app.services.stream_session``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Iterable

from redis.exceptions import RedisError

from app.redisio.multiplexed import MultiplexedRedis
from app.storage.redis.execution_stream import ExecutionStreamStore, StreamEntry, entry_of
from app.storage.redis.keys import StreamKeys

log = logging.getLogger(__name__)

READ_COUNT = 1000
RETRY_S = 0.5
# How often the streams read are checked for having been rebuilt below where the hub
# stands (see ``_rewind_rebuilt``).
REWIND_CHECK_S = 5.0


class Subscription:
    """What one connection wants: some accounts' reports, or every account's (``None``)."""

    def __init__(
        self,
        accounts: frozenset[str] | None,
        queue: asyncio.Queue[object],
        overflowed: asyncio.Event,
    ) -> None:
        self.accounts = accounts
        self.queue = queue
        self.overflowed = overflowed

    def put(self, entry: StreamEntry) -> None:
        if self.overflowed.is_set():
            return
        try:
            self.queue.put_nowait(entry)
        except asyncio.QueueFull:
            self.overflowed.set()


class StreamHub:
    def __init__(
        self,
        store: ExecutionStreamStore,
        redis: MultiplexedRedis,
        reader: MultiplexedRedis,
        block_ms: int = 5000,
    ) -> None:
        """``reader``: a client of its own for the blocking read (its reply timeout longer
        than ``block_ms``)."""
        self._store = store
        self._redis = redis
        self._reader = reader
        self._block_ms = block_ms
        self._wake_key = StreamKeys.wake(f"{secrets.token_hex(6)}")
        self._by_account: dict[str, set[Subscription]] = {}
        self._of_all: set[Subscription] = set()
        self._cursors: dict[str, bytes] = {}  # stream key -> the last entry id read
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

    @property
    def subscribers(self) -> int:
        return len(self._of_all) + len({s for subs in self._by_account.values() for s in subs})

    async def subscribe(self, subscription: Subscription) -> None:
        """Deliver to ``subscription`` everything published from now on."""
        new_keys: dict[str, bytes] = {}
        if subscription.accounts is None:
            if not self._of_all and StreamKeys.all_executions not in self._cursors:
                new_keys[StreamKeys.all_executions] = await self._store.newest_all_id()
            self._of_all.add(subscription)
        else:
            fresh = [a for a in subscription.accounts if a not in self._by_account]
            newest = await self._store.newest(fresh)
            for account in fresh:
                new_keys[StreamKeys.executions(account)] = f"{newest[account]}-0".encode()
            for account in subscription.accounts:
                self._by_account.setdefault(account, set()).add(subscription)
        if new_keys:
            self._cursors.update(new_keys)
            await self._redis.execute("XADD", self._wake_key, "MAXLEN", "~", 10, "*", "w", 1)

    def unsubscribe(self, subscription: Subscription) -> None:
        self._of_all.discard(subscription)
        if not self._of_all:
            self._cursors.pop(StreamKeys.all_executions, None)
        for account in subscription.accounts or ():
            subscribers = self._by_account.get(account)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._by_account[account]
                    self._cursors.pop(StreamKeys.executions(account), None)

    async def _run(self) -> None:
        next_check = time.monotonic() + REWIND_CHECK_S
        while True:
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + REWIND_CHECK_S
                with contextlib.suppress(RedisError, OSError, TimeoutError):
                    await self._rewind_rebuilt()
            keys = [self._wake_key, *self._cursors]
            ids = [self._wake_cursor, *self._cursors.values()]
            try:
                reply = await self._reader.execute(
                    "XREAD", "COUNT", READ_COUNT, "BLOCK", self._block_ms, "STREAMS", *keys, *ids
                )
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("execution stream read failed: %r; again in %.1f s", exc, RETRY_S)
                await asyncio.sleep(RETRY_S)
                continue
            for key, entries in reply or ():
                self._deliver(key, entries)

    async def _rewind_rebuilt(self) -> None:
        """A stream whose newest entry is below where the hub stands was rebuilt from the
        order log (it had outlived its database): read it again from its start. The
        sessions drop what they have already sent."""
        accounts = {
            StreamKeys.account_of(key): cursor
            for key, cursor in self._cursors.items()
            if key != StreamKeys.all_executions
        }
        newest = await self._store.newest(accounts)
        for account, cursor in accounts.items():
            if newest[account] < int(cursor.split(b"-", 1)[0]):
                key = StreamKeys.executions(account)
                if key in self._cursors:
                    self._cursors[key] = b"0-0"

    def _deliver(self, key: bytes, entries: Iterable[tuple[bytes, list[bytes]]]) -> None:
        name = key.decode()
        last = None
        for entry_id, fields in entries:
            last = entry_id
            if name == self._wake_key:
                continue
            entry = entry_of(key, entry_id, fields)
            subscribers = (
                self._of_all
                if name == StreamKeys.all_executions
                else (self._by_account.get(entry.account, ()))
            )
            for subscription in subscribers:
                subscription.put(entry)
        if last is None:
            return
        if name == self._wake_key:
            self._wake_cursor = last
        elif name in self._cursors:  # not if its last subscriber left meanwhile
            self._cursors[name] = last
