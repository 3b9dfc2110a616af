"""A Redis lease, so that exactly one process does singleton work at a time."""

from __future__ import annotations

import os
import secrets

from app.redisio.multiplexed import MultiplexedRedis
from app.storage.redis import keys
from app.storage.redis.scripts import load_script


class Lease:
    def __init__(self, redis: MultiplexedRedis, role: str, ttl_ms: int = 3000) -> None:
        self._key = keys.leader(role)
        self._ttl_ms = ttl_ms
        self.holder = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._renew = load_script(redis, "app.storage.redis", "lease_renew")
        self._release = load_script(redis, "app.storage.redis", "lease_release")

    async def hold(self) -> bool:
        """Take the lease if free, extend it if ours; True while we hold it."""
        return bool(await self._renew(keys=[self._key], args=[self.holder, self._ttl_ms]))

    async def release(self) -> None:
        """Give it up if it is still ours, in one step: between a read and a delete it could
        lapse and be taken, and the delete would then end the new holder's lease."""
        await self._release(keys=[self._key], args=[self.holder])
