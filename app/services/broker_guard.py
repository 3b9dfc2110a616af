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
import time

from redis.exceptions import RedisError

from app.config import BrokerGuardSettings
from app.domain.broker_guard import BreakerState, BreakerView, BucketView, CallOutcome, Endpoint
from app.domain.errors import BrokerCircuitOpen, DependencyUnavailable, PacingRateLimited
from app.services.metrics import BREAKER_TRANSITIONS, BROKER_GUARD_REFUSALS, PACING_WAIT
from app.storage.redis.broker_guard import Admitted, BrokerGuardStore, Refused

log = logging.getLogger(__name__)

REFUSAL_REASONS = ("circuit_open", "paced", "unreadable")
# What a client is told to wait when the guard's own state cannot be read.
UNREADABLE_RETRY_AFTER_MS = 1000
# A booked token used this much later than its moment is not used: the call books again.
LATE_WAKE_S = 0.02
LATE_WAKES_BEFORE_REFUSING = 3
# A call that must not be refused books its token even this far ahead (it never is: the
# queue before it is at most ``max_wait_ms`` long).
UNREFUSED_MAX_WAIT_MS = 60_000


class BrokerGuard:
    def __init__(self, store: BrokerGuardStore, settings: BrokerGuardSettings) -> None:
        self._store = store
        self._settings = settings
        self._policy = settings.breaker()
        self._rules = {endpoint: settings.rule(endpoint) for endpoint in Endpoint}
        # Looking a labelled series up costs more than updating it: once, here.
        self._waits = {e: PACING_WAIT.labels(store.broker, e.value) for e in Endpoint}
        # Every series on /metrics from the start, at 0: a rule's increase() then sees the
        # first breaker transition or refusal, not a series appearing.
        for state in BreakerState:
            BREAKER_TRANSITIONS.labels(store.broker, state.value)
        for endpoint in Endpoint:
            for reason in REFUSAL_REASONS:
                BROKER_GUARD_REFUSALS.labels(store.broker, endpoint.value, reason)

    async def start(self) -> None:
        """Pacing buckets Redis does not have start empty, from now: a gateway that starts
        (or a Redis that lost its state) never hands out a fresh burst at once."""
        try:
            await self._store.start(list(Endpoint))
        except (RedisError, OSError) as exc:
            log.warning("pacing buckets not made at start (made empty on first use): %r", exc)

    @property
    def broker(self) -> str:
        return self._store.broker

    async def admit(self, endpoint: Endpoint) -> Admitted:
        """Wait until a call to ``endpoint`` may go, or raise why it may not.

        A caller that wakes later than its booked token's moment (its process stalled: a
        pause, a starved CPU) books again: the bucket has refilled meanwhile as if the
        token had been used on time, and the calls piled up behind the stall would
        otherwise reach the broker together with a fresh burst."""
        for _ in range(LATE_WAKES_BEFORE_REFUSING):
            admitted = await self._admit_once(endpoint)
            if admitted.wait_s <= 0:
                return admitted
            due = time.monotonic() + admitted.wait_s
            await asyncio.sleep(admitted.wait_s)
            if time.monotonic() - due <= LATE_WAKE_S:
                return admitted
            await self.unused(admitted)
        self._count_refusal(endpoint, "paced")
        raise PacingRateLimited(
            f"broker {self.broker!r}: no {endpoint.value} token could be used on time",
            int(self._settings.max_wait_ms),
        )

    async def _admit_once(self, endpoint: Endpoint) -> Admitted:
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
        return result

    async def pace_unrefused(self, endpoint: Endpoint) -> None:
        """Wait for a token for a call that must not be refused (a kill switch's mass
        cancel, an operator's reconcile): its turn in the bucket's queue however long that
        is; the breaker is not asked and the call's outcome does not count for it. If the
        bucket cannot be read the call goes anyway: a kill switch that waits for Redis
        cancels nothing."""
        try:
            result = await self._take(endpoint, UNREFUSED_MAX_WAIT_MS)
        except (RedisError, OSError) as exc:
            log.warning("pacing unreadable: a %s call goes unpaced: %r", endpoint.value, exc)
            return
        if isinstance(result, Admitted):
            await asyncio.sleep(result.wait_s)
        else:
            log.warning("a %s call found no token within a minute; it goes now", endpoint.value)

    async def pace(self, endpoint: Endpoint) -> None:
        """Wait for a token for a call the breaker has no say in (market data taken in):
        within ``max_wait_ms``, else 429 pacing.rate_limited. An unreadable bucket refuses
        (503 dependency.unavailable): the call's own store is the same Redis."""
        try:
            result = await self._take(endpoint, self._settings.max_wait_ms)
        except (RedisError, OSError) as exc:
            self._count_refusal(endpoint, "unreadable")
            raise DependencyUnavailable(f"pacing state unreadable: {exc!r}") from exc
        if not isinstance(result, Admitted):
            self._count_refusal(endpoint, "paced")
            raise PacingRateLimited(
                f"{endpoint.value}: {self._rules[endpoint].rate:g} requests a second; none "
                f"free within {self._settings.max_wait_ms:g} ms",
                result.retry_after_ms,
            )
        if result.wait_s > 0:
            await asyncio.sleep(result.wait_s)

    async def token_now(self, endpoint: Endpoint) -> bool:
        """A token for a call that can wait for a later round (reconciliation's queries),
        if one is free now: nothing waits for it (the applier's loop would stall), and an
        unreadable bucket gives none. The breaker is not asked."""
        try:
            return isinstance(await self._take(endpoint, 0), Admitted)
        except (RedisError, OSError) as exc:
            log.warning("pacing unreadable: no %s call this round: %r", endpoint.value, exc)
            return False

    async def _take(self, endpoint: Endpoint, max_wait_ms: float) -> Admitted | Refused:
        """A token (booked within ``max_wait_ms``) without asking the breaker."""
        result = await self._store.admit(
            endpoint, self._rules[endpoint], max_wait_ms, self._policy, ask_breaker=False
        )
        if isinstance(result, Admitted):
            self._waits[endpoint].observe(result.wait_s)
        return result

    async def succeeded(self, admitted: Admitted) -> None:
        """The broker answered: consecutive failures start again from none. Always sent:
        other calls may have failed since this one was admitted."""
        await self._record(admitted, CallOutcome.SUCCESS)

    async def failed(self, admitted: Admitted) -> None:
        """The call timed out or never reached the broker."""
        await self._record(admitted, CallOutcome.FAILURE)

    async def unused(self, admitted: Admitted) -> None:
        """The call was never made: a half-open breaker's trial slot goes back (else the
        round would wait its whole open time for an outcome that never comes)."""
        if admitted.trial:
            await self._record(admitted, CallOutcome.UNUSED)

    async def read(self) -> tuple[BreakerView, list[BucketView]]:
        return await self._store.read(self._policy, self._rules)

    async def _record(self, admitted: Admitted, outcome: CallOutcome) -> None:
        try:
            entered = await self._store.record(admitted, outcome, self._policy)
        except (RedisError, OSError) as exc:
            # The next call's admission reads the same Redis, and fails closed.
            log.warning("broker call outcome not counted: %r", exc)
            return
        if entered is not None:
            BREAKER_TRANSITIONS.labels(self.broker, entered.value).inc()
            log.warning("circuit breaker of broker %r is now %s", self.broker, entered.value)

    def _count_refusal(self, endpoint: Endpoint, reason: str) -> None:
        BROKER_GUARD_REFUSALS.labels(self.broker, endpoint.value, reason).inc()
