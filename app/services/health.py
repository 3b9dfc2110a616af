"""Whether the gateway's dependencies answer: for ``/readyz`` and for the metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.brokers.simulated import SimulatedBroker
from app.redisio.multiplexed import MultiplexedRedis

CHECK_TIMEOUT_S = 1.0
OK = "ok"


class DependencyChecks:
    def __init__(self, redis: MultiplexedRedis, engine: AsyncEngine, broker: SimulatedBroker):
        self._redis = redis
        self._engine = engine
        self._broker = broker

    async def check(self) -> dict[str, str]:
        """Each dependency: "ok", or why not (each given ``CHECK_TIMEOUT_S``)."""
        checks: dict[str, Awaitable[None]] = {
            "redis": self._redis.ping(),
            "database": self._database(),
            "broker": self._broker.ping(),
        }
        results = await asyncio.gather(
            *(asyncio.wait_for(c, CHECK_TIMEOUT_S) for c in checks.values()),
            return_exceptions=True,
        )
        return {
            name: OK if not isinstance(result, BaseException) else f"unavailable: {result!r}"[:200]
            for name, result in zip(checks, results, strict=True)
        }

    async def _database(self) -> None:
        async with self._engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
