"""The singleton lease against a real Redis: one holder at a time, and a lapsed holder's
release never ends the next holder's lease."""

from __future__ import annotations

import asyncio

from app.redisio.embedded import EmbeddedRedis
from app.redisio.multiplexed import MultiplexedRedis
from app.storage.redis.lease import Lease

DB = 9  # this file's own database of the session's server


async def test_a_lapsed_holders_release_leaves_the_new_holders_lease(
    redis_server: EmbeddedRedis,
) -> None:
    redis = MultiplexedRedis(redis_server.url.rsplit("/", 1)[0] + f"/{DB}")
    try:
        first, second = Lease(redis, "test-role", ttl_ms=200), Lease(redis, "test-role")
        assert await first.hold()
        assert not await second.hold()  # one holder at a time
        await asyncio.sleep(0.3)  # the first one's lease lapses (it was frozen, say)
        assert await second.hold()
        await first.release()  # woken, it gives up what it no longer holds
        assert not await first.hold()  # the second still holds it
        await second.release()
        assert await first.hold()  # released by its holder: free
    finally:
        await redis.execute("FLUSHDB")
        await redis.close()
