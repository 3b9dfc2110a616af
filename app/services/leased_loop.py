"""A background loop that one process at a time runs: the singletons of market data,
signals and the strategy."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from redis.exceptions import RedisError

from app.storage.redis.lease import Lease

log = logging.getLogger(__name__)

RETRY_S = 0.5
LEASE_RENEW_S = 1.0  # the lease lasts 3 s: renewed well before it lapses
UNAVAILABLE = (RedisError, OSError, TimeoutError)


class LeasedLoop:
    """``step()`` again and again while this process holds ``lease``. ``reset()`` when it
    does not, or when a step failed: the next step starts again from what Redis holds, as
    another holder may have moved it meanwhile."""

    name = "leased-loop"

    def __init__(self, lease: Lease) -> None:
        self._lease = lease
        self._lease_until = 0.0
        self._task: asyncio.Task[None] | None = None

    async def step(self) -> None:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget what this process holds in memory of the shared state."""

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        with contextlib.suppress(*UNAVAILABLE):
            await self._lease.release()

    async def _run(self) -> None:
        while True:
            try:
                if not await self._holding():
                    self.reset()
                    await asyncio.sleep(LEASE_RENEW_S)
                    continue
                await self.step()
            except UNAVAILABLE as exc:
                log.warning("%s failed: %r; again in %.1f s", self.name, exc, RETRY_S)
                self.reset()
                await asyncio.sleep(RETRY_S)
            except Exception:
                log.exception("%s failed; again in %.1f s", self.name, RETRY_S)
                self.reset()
                await asyncio.sleep(RETRY_S)

    async def _holding(self) -> bool:
        now = time.monotonic()
        if now < self._lease_until:
            return True
        if await self._lease.hold():
            self._lease_until = now + LEASE_RENEW_S
            return True
        return False
