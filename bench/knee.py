"""``python -m bench knee``: the highest constant arrival rate the order path answers within
the SLA (P95 <= 200 ms by default), from the open-loop generator of ``bench orders``.

One gateway (``--workers``, SQLite or PostgreSQL, a zero-latency paper exchange, pacing and
key budgets far above the load), then open-loop phases at rising rates, each after a short
warm-up, until one misses: its P95 is over the SLA, it has errors, or the generator could
not offer the rate (achieved under 97% of it: then the client, not the gateway, is the
limit, and the run says so). The knee is the highest rate that held. The floor of this
bench is ``bench orders``' (the same generator against a one-Redis-call app); the knee is a
capacity figure, not a ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.redisio.embedded import EmbeddedRedis
from bench.databases import describe, order_log_url
from bench.openloop import LoadProcess, PhaseResult
from bench.orders import _environment, _Phase, _start_gateway
from bench.procs import free_port, wait_until_idle

ACHIEVED_SHARE = 0.97


@dataclass(frozen=True, slots=True)
class Step:
    rate: float
    result: PhaseResult
    held: bool
    why: str  # why not, when it did not hold


def run_knee(
    rates: list[float],
    duration_s: float,
    warmup_s: float,
    workers: int,
    sla_ms: float,
    database: str,
    postgres_url: str,
    gateway_env: dict[str, str],
) -> list[Step]:
    steps: list[Step] = []
    run_tag = secrets.token_hex(3)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="og-knee-")))
        redis = EmbeddedRedis(port=free_port()).start()
        stack.callback(redis.stop)
        _progress(describe(database, postgres_url))
        database_url = stack.enter_context(order_log_url(database, postgres_url, tmp))
        env = _environment(tmp, redis.url, database_url, gateway_env)
        gateway = stack.enter_context(_start_gateway(env, tmp, _progress, workers))
        load = stack.enter_context(LoadProcess())
        for number, rate in enumerate(rates):
            wait_until_idle([gateway.server])
            warm = _Phase(gateway, "warm-up", warmup_s, rate, connections=32)
            load.run(warm.spec(f"knee-{run_tag}-{number:02d}w-"))
            phase = _Phase(gateway, "open loop", duration_s, rate, connections=32)
            result = load.run(phase.spec(f"knee-{run_tag}-{number:02d}-"))
            step = _judge(rate, result, sla_ms)
            steps.append(step)
            _progress(
                f"{rate:>6.0f}/s offered: {result.achieved_per_s:.0f}/s, P95 "
                f"{_ms(result.p95_ms)} ms, errors {result.error_count}: "
                + ("held" if step.held else f"missed ({step.why})")
            )
            if not step.held:
                break
    return steps


def _judge(rate: float, result: PhaseResult, sla_ms: float) -> Step:
    if result.error_count:
        return Step(rate, result, False, f"{result.error_count} errors: {result.errors}")
    if result.achieved_per_s < ACHIEVED_SHARE * rate:
        cpu = result.client_cpu_share
        return Step(
            rate,
            result,
            False,
            f"offered only {result.achieved_per_s:.0f}/s (client CPU {cpu:.0%})",
        )
    if result.p95_ms is None or result.p95_ms > sla_ms:
        return Step(rate, result, False, f"P95 {_ms(result.p95_ms)} ms > {sla_ms:g} ms")
    return Step(rate, result, True, "")


def format_steps(steps: list[Step], sla_ms: float, target: float) -> str:
    lines = [
        f"{'offered/s':>10}{'achieved/s':>12}{'P50 ms':>9}{'P95 ms':>9}{'P99 ms':>9}"
        f"{'errors':>8}{'client CPU':>12}  held",
    ]
    for s in steps:
        r = s.result
        lines.append(
            f"{s.rate:>10.0f}{r.achieved_per_s:>12.0f}{_ms(r.p50_ms):>9}{_ms(r.p95_ms):>9}"
            f"{_ms(r.p99_ms):>9}{r.error_count:>8}{r.client_cpu_share:>12.0%}  "
            + ("yes" if s.held else f"no: {s.why}")
        )
    knee = max((s.rate for s in steps if s.held), default=None)
    verdict = "PASS" if knee is not None and knee >= target else "FAIL"
    lines.append(
        f"knee: {'none' if knee is None else f'{knee:.0f}/s'} (P95 <= {sla_ms:g} ms); "
        f"target >= {target:.0f}/s: {verdict}"
    )
    return "\n".join(lines)


def to_json(steps: list[Step], sla_ms: float, target: float) -> dict[str, Any]:
    knee = max((s.rate for s in steps if s.held), default=None)
    return {
        "sla_ms": sla_ms,
        "target_per_s": target,
        "knee_per_s": knee,
        "steps": [
            {"rate": s.rate, "held": s.held, "why": s.why, **s.result.summary()} for s in steps
        ],
    }


def command(args: argparse.Namespace) -> int:
    env = dict(item.partition("=")[::2] for item in args.gateway_env)
    steps = run_knee(
        args.rates,
        args.duration,
        args.warmup,
        args.workers,
        args.sla_ms,
        args.database,
        args.postgres_url,
        env,
    )
    print(format_steps(steps, args.sla_ms, args.target))
    if args.json is not None:
        args.json.write_text(json.dumps(to_json(steps, args.sla_ms, args.target), indent=2))
    knee = max((s.rate for s in steps if s.held), default=0.0)
    return 0 if knee >= args.target else 1


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
