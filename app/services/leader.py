"""A Redis lease so that exactly one worker process does singleton work at a time."""

from __future__ import annotations

import os
import secrets

from app.storage import keys
from app.storage.redis_mux import MultiplexedRedis
from app.storage.scripts import load_script


class Lease:
    def __init__(self, redis: MultiplexedRedis, role: str, ttl_ms: int = 3000) -> None:
        self._key = keys.leader(role)
        self._ttl_ms = ttl_ms
        self.holder = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._renew = load_script(redis, "app.storage", "lease_renew")
        self._redis = redis

    async def hold(self) -> bool:
        """Take the lease if free, extend it if ours; True while we hold it."""
        return bool(await self._renew(keys=[self._key], args=[self.holder, self._ttl_ms]))

    async def release(self) -> None:
        if (await self._redis.execute("GET", self._key)) == self.holder.encode():
            await self._redis.execute("DEL", self._key)
