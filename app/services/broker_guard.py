"""BrokerGuard: what every call to the broker passes first.

An open circuit breaker refuses at once (503 broker.circuit_open), taking no token; else
the call takes a token from its endpoint's bucket, or books the next one and waits for it,
first come first served across every worker, unless that wait would pass ``max_wait_ms``
(429 pacing.rate_limited, nothing sent). Fail closed: a guard whose state cannot be read
(Redis) reads as open. The call's outcome then counts for the breaker: timeouts and
transport errors are failures, every answer from the broker (a business reject included)
a success.
"""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError

from app.config import BrokerGuardSettings
from app.domain.broker_guard import BreakerView, BucketView, Endpoint
from app.domain.errors import BrokerCircuitOpen, PacingRateLimited
from app.services.metrics import BREAKER_TRANSITIONS, BROKER_GUARD_REFUSALS, PACING_WAIT
from app.storage.redis.broker_guard import Admitted, BrokerGuardStore

log = logging.getLogger(__name__)

# What a client is told to wait when the guard's own state cannot be read.
UNREADABLE_RETRY_AFTER_MS = 1000


class BrokerGuard:
    def __init__(self, store: BrokerGuardStore, settings: BrokerGuardSettings) -> None:
        self._store = store
        self._settings = settings
        self._policy = settings.breaker()
        self._rules = {endpoint: settings.rule(endpoint) for endpoint in Endpoint}
        # Looking a labelled series up costs more than updating it: once, here.
        self._waits = {e: PACING_WAIT.labels(store.broker, e.value) for e in Endpoint}

    @property
    def broker(self) -> str:
        return self._store.broker

    async def admit(self, endpoint: Endpoint) -> Admitted:
        """Wait until a call to ``endpoint`` may go, or raise why it may not."""
        try:
            result = await self._store.admit(
                endpoint, self._rules[endpoint], self._settings.max_wait_ms, self._policy
            )
        except (RedisError, OSError) as exc:
            self._count_refusal(endpoint, "unreadable")
            raise BrokerCircuitOpen(
                f"the circuit breaker's state is unreadable ({exc!r}): read as open",
                UNREADABLE_RETRY_AFTER_MS,
            ) from exc
        if not isinstance(result, Admitted):
            if result.breaker_open:
                self._count_refusal(endpoint, "circuit_open")
                raise BrokerCircuitOpen(
                    f"the circuit breaker of broker {self.broker!r} is open",
                    result.retry_after_ms,
                )
            self._count_refusal(endpoint, "paced")
            raise PacingRateLimited(
                f"broker {self.broker!r} allows {self._rules[endpoint].rate:g} {endpoint.value}"
                f" requests a second; none free within {self._settings.max_wait_ms:g} ms",
                result.retry_after_ms,
            )
        self._waits[endpoint].observe(result.wait_s)
        if result.wait_s > 0:
            await asyncio.sleep(result.wait_s)
        return result

    async def succeeded(self, admitted: Admitted) -> None:
        """The broker answered. Sent only when it can change something (a trial call, or
        failures counted): a success among successes is the common case, and free."""
        if admitted.trial or admitted.failures > 0:
            await self._record(admitted, failed=False)

    async def failed(self, admitted: Admitted) -> None:
        """The call timed out or never reached the broker."""
        await self._record(admitted, failed=True)

    async def read(self) -> tuple[BreakerView, list[BucketView]]:
        return await self._store.read(self._policy, self._rules)

    async def _record(self, admitted: Admitted, *, failed: bool) -> None:
        try:
            entered = await self._store.record(admitted, failed=failed, policy=self._policy)
        except (RedisError, OSError) as exc:
            # The next call's admission reads the same Redis, and fails closed.
            log.warning("broker call outcome not counted: %r", exc)
            return
        if entered is not None:
            BREAKER_TRANSITIONS.labels(self.broker, entered.value).inc()
            log.warning("circuit breaker of broker %r is now %s", self.broker, entered.value)

    def _count_refusal(self, endpoint: Endpoint, reason: str) -> None:
        BROKER_GUARD_REFUSALS.labels(self.broker, endpoint.value, reason).inc()
