"""Inbound API rate limits in Redis: one token bucket per API key and route class, taken
by one Lua script (``lua/rate_limit.lua``) on Redis's own clock, shared by every worker."""

from __future__ import annotations

from app.domain.broker_guard import PacingRule
from app.domain.rate_limits import RateLimitDecision, RouteClass, policy
from app.redisio.multiplexed import MultiplexedRedis
from app.storage.redis import keys
from app.storage.redis.scripts import load_script


class RateLimitStore:
    def __init__(self, redis: MultiplexedRedis) -> None:
        self._take = load_script(
            redis, "app.storage.redis", "rate_limit", preludes=("token_bucket",)
        )

    async def take(
        self, key_id: str, route_class: RouteClass, rule: PacingRule
    ) -> RateLimitDecision:
        allowed, remaining, full_in_ms, retry_ms = await self._take(
            keys=[keys.inbound_bucket(key_id, route_class.value)], args=[rule.rate, rule.burst]
        )
        quota, window = policy(rule.rate, rule.burst)
        return RateLimitDecision(
            route_class=route_class,
            allowed=bool(allowed),
            quota=quota,
            window_s=window,
            remaining=int(remaining),
            full_in_s=-(-int(full_in_ms) // 1000),
            retry_after_ms=int(retry_ms),
        )
