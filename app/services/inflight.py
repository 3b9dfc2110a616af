"""One task per key at a time: callers that need the same thing at once share one call."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class InFlight(Generic[K, V]):
    """Tasks in flight by key. A caller that finds one awaits it (through ``asyncio.shield``,
    so its own cancellation does not cancel the others'); a caller that does not await it
    leaves it running in the background. A failure reaches whoever awaited the task, and the
    log at debug level for a background one."""

    def __init__(self) -> None:
        self._tasks: dict[K, asyncio.Task[V]] = {}

    def start(self, key: K, work: Callable[[K], Coroutine[Any, Any, V]]) -> asyncio.Task[V]:
        """The task in flight for ``key``, started as ``work(key)`` if there is none."""
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.create_task(work(key))
            task.add_done_callback(functools.partial(self._done, key))
            self._tasks[key] = task
        return task

    def forget(self, key: K) -> None:
        """Later callers start afresh (the task in flight keeps running for its own)."""
        self._tasks.pop(key, None)

    def keys(self) -> list[K]:
        return list(self._tasks)

    def cancel_all(self) -> None:
        for task in self._tasks.values():
            task.cancel()

    def _done(self, key: K, task: asyncio.Task[V]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled() and task.exception() is not None:
            log.debug("%r failed: %r", key, task.exception())
