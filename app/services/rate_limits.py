"""InboundLimits: each API key's request budget per class of routes (order entry, cancels,
queries), checked right after the key is known and before any other work. Admin keys are
unlimited unless configured otherwise.

A Redis that cannot be asked lets the request through (logged): reads of the order log
must not stop with Redis, and everything that changes risk state needs Redis anyway, where
it fails closed.
"""

from __future__ import annotations

import logging

from redis.exceptions import RedisError

from app.config import InboundLimitSettings
from app.domain.errors import RateLimited
from app.domain.rate_limits import RouteClass
from app.services.auth import Principal, Role
from app.storage.redis.rate_limits import RateLimitStore

log = logging.getLogger(__name__)


class InboundLimits:
    def __init__(self, store: RateLimitStore, settings: InboundLimitSettings) -> None:
        self._store = store
        self._settings = settings
        self._rules = {c: settings.rule(c) for c in RouteClass}

    async def take(self, principal: Principal, route_class: RouteClass) -> dict[str, str]:
        """Take one request from the key's budget for ``route_class``: the RateLimit headers
        for its answer (none for an unlimited key), or ``RateLimited`` (429)."""
        if principal.role is Role.ADMIN and self._settings.admin_unlimited:
            return {}
        try:
            decision = await self._store.take(
                principal.key_id, route_class, self._rules[route_class]
            )
        except (RedisError, OSError) as exc:
            log.warning("inbound rate limit not checked (Redis): %r", exc)
            return {}
        if not decision.allowed:
            rule = self._rules[route_class]
            raise RateLimited(
                f"this API key may send {rule.rate:g} {route_class.value} requests a second"
                f" (bursts of {rule.burst})",
                decision.retry_after_ms,
                decision.headers(),
            )
        return decision.headers()
