"""The broker guard's state in Redis: pacing buckets and the circuit breaker, each step one
Lua script (``lua/broker_guard_*.lua``) reading Redis's own clock."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.domain.broker_guard import (
    BreakerPolicy,
    BreakerState,
    BreakerView,
    BucketView,
    CallOutcome,
    Endpoint,
    PacingRule,
)
from app.redisio.multiplexed import MultiplexedRedis
from app.storage.redis.keys import BrokerGuardKeys
from app.storage.redis.scripts import load_script


@dataclass(frozen=True, slots=True)
class Admitted:
    """A call may go to the broker after ``wait_s`` (its booked token's time)."""

    wait_s: float
    generation: int  # the breaker's, at admission: an outcome counts only within it
    trial: bool  # one of a half-open breaker's trial calls
    failures: int  # consecutive failures counted when it was admitted


@dataclass(frozen=True, slots=True)
class Refused:
    breaker_open: bool  # else paced: no token within the wait
    retry_after_ms: int


class BrokerGuardStore:
    def __init__(self, redis: MultiplexedRedis, broker: str) -> None:
        self.broker = broker
        self._keys = BrokerGuardKeys(broker)
        self._admit, self._record, self._read, self._start = (
            load_script(
                redis, "app.storage.redis", name, preludes=("token_bucket", "broker_guard_common")
            )
            for name in (
                "broker_guard_admit",
                "broker_guard_record",
                "broker_guard_read",
                "broker_guard_start",
            )
        )

    async def start(self, endpoints: Sequence[Endpoint]) -> None:
        """Make the buckets Redis does not have, empty from now."""
        await self._start(keys=[self._keys.bucket(e) for e in endpoints], args=[])

    async def admit(
        self,
        endpoint: Endpoint,
        rule: PacingRule,
        max_wait_ms: float,
        policy: BreakerPolicy,
        *,
        ask_breaker: bool = True,
    ) -> Admitted | Refused:
        """A token (now, or booked within ``max_wait_ms``), after the breaker allowed the
        call; ``ask_breaker`` False: paced only (its outcome is not for the breaker)."""
        reply = await self._admit(
            keys=[self._keys.breaker, self._keys.bucket(endpoint)],
            args=[
                rule.rate,
                rule.burst,
                max_wait_ms,
                policy.open_s * 1000,
                policy.half_open_trials,
                "1" if ask_breaker else "0",
            ],
        )
        kind = reply[0].decode()
        if kind == "ok":
            _, wait_us, generation, trial, failures = reply
            return Admitted(int(wait_us) / 1_000_000, int(generation), bool(trial), int(failures))
        return Refused(breaker_open=kind == "open", retry_after_ms=int(reply[1]))

    async def record(
        self, admitted: Admitted, outcome: CallOutcome, policy: BreakerPolicy
    ) -> BreakerState | None:
        """Count a call's outcome; the state it moved the breaker to, if it did."""
        reply = await self._record(
            keys=[self._keys.breaker],
            args=[
                outcome.value,
                admitted.generation,
                policy.failure_threshold,
                policy.half_open_trials,
                policy.open_s * 1000,
            ],
        )
        return BreakerState(reply[0].decode()) if reply[1] else None

    async def read(
        self, policy: BreakerPolicy, rules: dict[Endpoint, PacingRule]
    ) -> tuple[BreakerView, list[BucketView]]:
        endpoints = list(rules)
        args: list[Any] = [policy.open_s * 1000, policy.half_open_trials]
        for endpoint in endpoints:
            args += [rules[endpoint].rate, rules[endpoint].burst]
        breaker, *buckets = await self._read(
            keys=[self._keys.breaker, *(self._keys.bucket(e) for e in endpoints)], args=args
        )
        return _breaker_view(self.broker, breaker), [
            _bucket_view(endpoint, rules[endpoint], fields)
            for endpoint, fields in zip(endpoints, buckets, strict=True)
        ]


def _breaker_view(broker: str, fields: Sequence[Any]) -> BreakerView:
    state, failures, trials, successes, retry_ms, opened, closed = fields
    return BreakerView(
        broker=broker,
        state=BreakerState(state.decode()),
        consecutive_failures=int(failures),
        trials_admitted=int(trials),
        trials_succeeded=int(successes),
        retry_after_ms=int(retry_ms),
        times_opened=int(opened),
        times_closed=int(closed),
    )


def _bucket_view(endpoint: Endpoint, rule: PacingRule, fields: Sequence[Any]) -> BucketView:
    tokens = float(fields[0])
    return BucketView(
        endpoint=endpoint,
        rate=rule.rate,
        burst=rule.burst,
        tokens=tokens,
        queued=math.ceil(-tokens) if tokens < 0 else 0,
        taken=int(fields[1]),
        waited=int(fields[2]),
        throttled=int(fields[3]),
    )
