"""``python -m bench guard``: what the broker guard adds to a placement, against its floor,
in one run.

The guard is what every order passes on its way to the broker: ``BrokerGuard.admit``
(the circuit breaker, then a pacing token: one EVALSHA of ``broker_guard_admit.lua``) and,
once the broker answered, ``BrokerGuard.succeeded`` (the outcome counted for the breaker:
``broker_guard_record.lua``). Its floor is one plain ``GET`` through the same Redis client.
The order placement bucket is set far above the offered rate, so no call waits for a
token: this is the cost of the checks themselves, not of pacing's waits.

Both run in this process, on uvloop like the gateway, open loop at a constant arrival rate
(``bench.arrivals``: latency from the intended start), taking turns in half-second rounds
so that a noisy neighbour hurts both alike. Redis: ``REDIS_URL`` if set, else a private
redis-server on a unix socket. The run's keys are deleted after it.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from collections.abc import Callable
from contextlib import AsyncExitStack, ExitStack
from dataclasses import asdict, dataclass

import uvloop
from redis.exceptions import RedisError

from app.config import BrokerGuardSettings, PacingRuleSettings, Settings, get_settings
from app.domain.broker_guard import Endpoint
from app.redisio.embedded import EmbeddedRedis
from app.runtime import open_commands
from app.services.broker_guard import BrokerGuard
from app.storage.redis.broker_guard import BrokerGuardStore
from app.storage.redis.keys import BrokerGuardKeys
from bench.arrivals import ArrivalClock, Recorder, open_loop
from bench.risk_report import FLOOR_OK, RiskPhase

# What the breaker check and the pacing token may add to an order's P95 (docs/performance.md,
# "The broker guard and each key's budget on the order path").
OVERHEAD_P95_TARGET_MS = 0.3
ROUND_S = 0.5
FLOOR_KEY = "bench:guard:floor"
UNPACED = PacingRuleSettings(rate=1_000_000, burst=1_000_000)


@dataclass(frozen=True, slots=True)
class GuardBenchOptions:
    rate: float = 500.0
    seconds: float = 5.0
    warmup_s: float = 1.0


@dataclass(frozen=True, slots=True)
class GuardReport:
    options: GuardBenchOptions
    floor: RiskPhase
    guard: RiskPhase

    @property
    def overhead_p95_ms(self) -> float | None:
        if self.guard.p95_ms is None or self.floor.p95_ms is None:
            return None
        return self.guard.p95_ms - self.floor.p95_ms

    @property
    def passed(self) -> bool:
        overhead = self.overhead_p95_ms
        return (
            overhead is not None
            and overhead <= OVERHEAD_P95_TARGET_MS
            and not self.guard.errors
            and self.guard.completed == self.guard.started
        )

    def to_json(self) -> dict[str, object]:
        return {
            "options": asdict(self.options),
            "floor": self.floor.summary(),
            "guard": self.guard.summary(),
            "overhead_p95_ms": self.overhead_p95_ms,
            "target_overhead_p95_ms": OVERHEAD_P95_TARGET_MS,
            "passed": self.passed,
        }


async def measure_guard(
    options: GuardBenchOptions,
    settings: Settings,
    redis_url: str,
    clock: ArrivalClock,
    progress: Callable[[str], None],
) -> GuardReport:
    broker = f"bench-{secrets.token_hex(3)}"  # its own keys on a shared Redis
    guard_settings = BrokerGuardSettings(pacing={Endpoint.ORDER_PLACEMENT: UNPACED})
    async with AsyncExitStack() as stack:
        redis = open_commands(redis_url, settings)
        stack.push_async_callback(redis.close)
        guard = BrokerGuard(BrokerGuardStore(redis, broker), guard_settings)
        await guard.start()
        keys = BrokerGuardKeys(broker)
        stack.push_async_callback(
            redis.execute, "DEL", keys.breaker, *(keys.bucket(e) for e in Endpoint), FLOOR_KEY
        )

        async def floor() -> str:
            await redis.execute("GET", FLOOR_KEY)
            return FLOOR_OK

        async def guarded() -> str:
            admitted = await guard.admit(Endpoint.ORDER_PLACEMENT)
            await guard.succeeded(admitted)
            return FLOOR_OK

        async def phase(seconds: float, floor_rec: Recorder, guard_rec: Recorder) -> None:
            total = round(options.rate * seconds)
            per_round = max(1, round(options.rate * ROUND_S))
            for first in range(0, total, per_round):
                count = min(per_round, total - first)
                await open_loop(clock, lambda _: floor(), count, options.rate, floor_rec)
                await open_loop(clock, lambda _: guarded(), count, options.rate, guard_rec)

        progress(f"guard: warm-up {options.warmup_s:g} s of each at {options.rate:g}/s")
        await phase(options.warmup_s, Recorder(), Recorder())
        progress(f"guard: {options.seconds:g} s of each at {options.rate:g}/s, interleaved")
        floor_rec, guard_rec = Recorder(), Recorder()
        await phase(options.seconds, floor_rec, guard_rec)
    mode = f"open@{options.rate:g}"
    return GuardReport(
        options,
        RiskPhase.summarize("floor", mode, options.rate, floor_rec),
        RiskPhase.summarize("guard", mode, options.rate, guard_rec),
    )


def run_guard_bench(
    options: GuardBenchOptions, settings: Settings, progress: Callable[[str], None]
) -> GuardReport:
    """Start a private Redis unless ``REDIS_URL``, measure, stop it all."""
    with ExitStack() as stack:
        redis_url = settings.redis_url
        if redis_url is None:
            redis_url = stack.enter_context(EmbeddedRedis()).url
        clock = stack.enter_context(ArrivalClock())
        return uvloop.run(measure_guard(options, settings, redis_url, clock, progress))


def format_report(report: GuardReport) -> str:
    lines = [f"{'target':<8}{'calls':>7}{'P50 ms':>9}{'P95 ms':>9}{'P99 ms':>9}{'max ms':>9}"]
    for p in (report.floor, report.guard):
        cells = (p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms)
        lines.append(f"{p.target:<8}{p.completed:>7}" + "".join(f"{_ms(v):>9}" for v in cells))
    overhead = report.overhead_p95_ms
    lines.append(
        f"guard - floor at P95: {_ms(overhead)} ms (target <= {OVERHEAD_P95_TARGET_MS:g} ms): "
        f"{'PASS' if report.passed else 'FAIL'}"
    )
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def command(args: argparse.Namespace) -> int:
    """Entry point of ``python -m bench guard``."""
    options = GuardBenchOptions(rate=args.rate, seconds=args.seconds, warmup_s=args.warmup)
    try:
        report = run_guard_bench(options, get_settings(), _progress)
    except (RuntimeError, OSError, RedisError) as exc:
        _progress(f"bench guard failed: {exc}")
        return 1
    print(format_report(report), flush=True)
    return 0 if report.passed else 1
