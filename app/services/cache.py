"""A read-through cache for values that many requests need at once (API keys, risk limits).

Each value is kept ``ttl_s`` from when its read began. However many callers need a key at
once, one read is in flight; while a key is in use, the last fifth of its TTL re-reads it in
the background, so its callers do not wait for the round trip. ``forget`` (a change notice)
drops a key, and a read begun before it is kept by nobody: later callers read afresh.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ReadThroughCache(Generic[K, V]):
    def __init__(
        self,
        read: Callable[[K], Coroutine[Any, Any, V]],
        ttl_s: float,
        *,
        max_entries: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._clock = clock
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._entries: dict[K, tuple[float, V]] = {}  # key -> (expiry, value)
        self._generations: dict[K, int] = {}  # bumped by each ``forget``
        self._reads: dict[K, asyncio.Task[V]] = {}

    async def get(self, key: K) -> V:
        """The key's value, read at most ``ttl_s`` ago. A failed read raises to every
        caller that waited for it and is not kept."""
        now = self._clock()
        entry = self._entries.get(key)
        if entry is None or entry[0] <= now:
            # Shielded: one caller's cancellation must not cancel the read the others await.
            return await asyncio.shield(self._read_once(key))
        if now >= entry[0] - self._ttl_s / 5:
            self._read_once(key)  # in the background
        return entry[1]

    def forget(self, key: K) -> None:
        self._generations[key] = self._generations.get(key, 0) + 1
        self._entries.pop(key, None)
        self._reads.pop(key, None)  # keeps running for its own callers, keeps nothing

    def forget_all(self) -> None:
        for key in {*self._entries, *self._reads}:
            self.forget(key)

    def close(self) -> None:
        for task in self._reads.values():
            task.cancel()

    def _read_once(self, key: K) -> asyncio.Task[V]:
        task = self._reads.get(key)
        if task is None:
            task = asyncio.create_task(self._read_and_keep(key))
            task.add_done_callback(functools.partial(self._read_done, key))
            self._reads[key] = task
        return task

    async def _read_and_keep(self, key: K) -> V:
        generation = self._generations.get(key, 0)
        read_at = self._clock()
        value = await self._read(key)
        if self._generations.get(key, 0) == generation:
            if self._max_entries is not None and len(self._entries) >= self._max_entries:
                self._entries.clear()
            self._entries[key] = (read_at + self._ttl_s, value)
        return value

    def _read_done(self, key: K, task: asyncio.Task[V]) -> None:
        if self._reads.get(key) is task:
            del self._reads[key]
        if not task.cancelled() and task.exception() is not None:
            log.debug("read of %r failed: %r", key, task.exception())
