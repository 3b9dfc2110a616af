"""``python -m bench scaling``: the order path's latency and the memory it holds as resting
orders, accounts and stream subscribers grow.

For each accounts level (1, 100, 1,000 by default): a private Redis, a SQLite order log and
the gateway (one worker, with its applier and worker, as ``bench orders`` starts it), a
trader key per account. Then, cumulatively, in that one gateway:

1. a warm-up at the measured rate, long enough for every account to trade;
2. point "empty": market orders at a constant arrival rate (open loop, latency from the
   intended send), buy and sell alternating, from every account in turn;
3. resting orders placed (limit buys far below the market, so they rest at the paper
   exchange, spread evenly over the accounts, 32 in flight at a time), up to
   each level of ``resting`` (0 -> 1,000 -> 10,000), each followed by the same measured
   phase;
4. at the last accounts level, ``subscribers`` WebSocket subscribers connected (subscriber
   ``i`` follows account ``i`` with its own key), and the phase once more.

At each point: P50/P95 at the rate, the resident memory of the gateway's processes (serve's
workers, the applier, the worker) and Redis's ``used_memory``. A point passes when its P95 is
within ``tolerance`` of the empty case's (the run's first point: the fewest accounts,
nothing resting), nothing failed, and memory grew no faster than the resting orders did
(see ``memory_linear``); its P95 over its own level's empty point is shown beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis

from app.redisio.embedded import EmbeddedRedis
from app.services.auth import ApiKeyService, Role
from app.storage.sql.database import create_engine
from app.storage.sql.repositories import ApiKeyRepository
from bench.databases import order_log_url
from bench.openloop import LoadProcess, LoadSpec, PhaseResult
from bench.orders import HOST, ORDER_BODIES, ORDERS_PATH, _environment, _progress, _start_gateway
from bench.procs import free_port, tree_rss_bytes, wait_until_idle
from bench.stream_clients import launched
from bench.wire import RequestTemplate, json_post_template

RESTING_BODY = {
    "symbol": "AAPL",  # the measured orders' symbol: its book holds them all
    "side": "buy",
    "qty": "1",
    "type": "limit",
    "limit_price": "1.00",  # far below the market: it rests
    "time_in_force": "day",
    "allow_duplicate": True,
}
MB = 2**20
# Memory may grow by this much beyond proportion to the resting orders: the allocator's
# arenas and the measured phases' own orders (market orders fill, and are data too).
RSS_SLACK_MB = 16.0
REDIS_SLACK_MB = 2.0
# Resting orders are handed out this fast and kept this many in flight.
PLACE_SEND_RATE = 20_000.0
PLACE_CONCURRENCY = 32
# Per resting order, the growth to a later point may be this many times the first step's.
GROWTH_FACTOR = 1.5


@dataclass(frozen=True, slots=True)
class ScalingOptions:
    rate: float = 500.0
    seconds: float = 3.0  # each point's measured phase
    warmup_s: float = 2.0
    accounts: tuple[int, ...] = (1, 100, 1000)
    resting: tuple[int, ...] = (0, 1000, 10000)
    subscribers: int = 100  # at the last accounts level's last point; 0: none
    tolerance: float = 0.20


@dataclass(slots=True)
class ScalingPoint:
    accounts: int
    resting: int
    subscribers: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    achieved_per_s: float
    errors: int
    gateway_rss_mb: float | None
    redis_mb: float
    p95_vs_empty: float | None = None  # over the empty case's: the run's first point
    p95_vs_level: float | None = None  # over its accounts level's empty point
    note: str = ""  # what went wrong, if anything did
    memory_ok: bool = True
    passed: bool = False
    latencies_s: list[float] = field(default_factory=list, repr=False)
    sent_at_s: list[float] = field(default_factory=list, repr=False)

    @property
    def name(self) -> str:
        subs = f", {self.subscribers} subs" if self.subscribers else ""
        return f"{self.accounts} acct, {self.resting:,} resting{subs}"

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        del data["latencies_s"], data["sent_at_s"]
        return {"point": self.name, **data}


def run_scaling(
    options: ScalingOptions, progress: Callable[[str], None] = _progress
) -> list[ScalingPoint]:
    points: list[ScalingPoint] = []
    for level, accounts in enumerate(options.accounts):
        last_level = level == len(options.accounts) - 1
        subscribers = options.subscribers if last_level else 0
        points += _run_level(options, accounts, subscribers, progress)
    judge(points, options.tolerance)
    return points


def _run_level(
    options: ScalingOptions, accounts: int, subscribers: int, progress: Callable[[str], None]
) -> list[ScalingPoint]:
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="og-bench-scale-")))
        redis_server = EmbeddedRedis(port=free_port()).start()
        stack.callback(redis_server.stop)
        database_url = stack.enter_context(order_log_url("sqlite", "", tmp))
        env = _environment(tmp, redis_server.url, database_url, {})
        gateway = stack.enter_context(_start_gateway(env, tmp, lambda _: None, with_key=False))
        names = [f"scale-{n:04d}" for n in range(accounts)]
        keys = create_keys(database_url, names)
        load = stack.enter_context(LoadProcess())
        market = _Template(gateway.port, keys, ORDER_BODIES)
        resting = _Template(gateway.port, keys, [RESTING_BODY])
        info = redis.Redis.from_url(redis_server.url)
        stack.callback(info.close)

        def measure(rested: int, subs: int, phase: str) -> ScalingPoint:
            wait_until_idle([gateway.server])
            spec = LoadSpec(
                HOST, gateway.port, market.renamed(phase), options.seconds, options.rate
            )
            result = load.run(spec)
            point = _point(accounts, rested, subs, result, gateway.server.pid, info)
            progress(
                f"scaling: {point.name}: P95 {_ms(point.p95_ms)} ms, gateway "
                f"{_mb(point.gateway_rss_mb)} MB, Redis {point.redis_mb:.1f} MB"
            )
            return point

        # Every account trades in the warm-up (its key looked up, its risk state loaded).
        warmup_s = max(options.warmup_s, 1.2 * accounts / options.rate)
        load.run(LoadSpec(HOST, gateway.port, market.renamed("w-"), warmup_s, options.rate))
        points: list[ScalingPoint] = []
        placed = 0
        for target in options.resting:
            if target > placed:
                failed = _place(load, gateway.port, resting.renamed(f"p{target}-"), target - placed)
                if failed is not None:  # the level ends here, its points so far kept
                    progress(f"scaling: {accounts} acct: {failed}")
                    points.append(_not_placed(accounts, target, failed))
                    break
                placed = target
            points.append(measure(placed, 0, f"s{target}-"))
        if subscribers and placed == options.resting[-1]:
            keys_file = tmp / "subscriber-keys"
            keys_file.write_text("\n".join(keys[:subscribers]) + "\n")
            url = f"ws://{HOST}:{gateway.port}/v1/stream"
            with launched(url, subscribers, keys_file=keys_file, env=env):
                points.append(measure(placed, subscribers, "subs-"))
    return points


def _place(load: LoadProcess, port: int, template: RequestTemplate, count: int) -> str | None:
    """``count`` resting orders, ``PLACE_CONCURRENCY`` in flight (the rest queue in the load
    process): as fast as the gateway takes them, never more than it can answer within its
    broker timeout (a burst of 504s would open the breaker). None if every one was placed,
    else what went wrong."""
    spec = LoadSpec(
        HOST,
        port,
        template,
        duration_s=count / PLACE_SEND_RATE,
        rate=PLACE_SEND_RATE,
        connections=PLACE_CONCURRENCY,
        max_connections=PLACE_CONCURRENCY,
        drain_s=10.0 + count / 200,
    )
    result = load.run(spec)
    if result.ok == count:
        return None
    return f"{result.ok:,} of {count:,} resting orders placed ({_refusals(result)})"


def _refusals(result: PhaseResult) -> str:
    """``503 x12 broker.circuit_open``: each error status, its count and first problem code."""
    parts = []
    for status, n in sorted(result.errors.items()):
        code = re.search(r'"code":\s*"([^"]+)"', result.error_samples.get(status, ""))
        parts.append(f"{status} x{n}" + (f" {code.group(1)}" if code else ""))
    return ", ".join(parts)


def _not_placed(accounts: int, resting: int, why: str) -> ScalingPoint:
    return ScalingPoint(accounts, resting, 0, None, None, None, 0.0, 0, None, 0.0, note=why)


def _point(
    accounts: int,
    resting: int,
    subscribers: int,
    result: PhaseResult,
    gateway_pid: int | None,
    info: redis.Redis,
) -> ScalingPoint:
    rss = tree_rss_bytes(gateway_pid)
    used = int(info.info("memory")["used_memory"])
    return ScalingPoint(
        accounts,
        resting,
        subscribers,
        result.p50_ms,
        result.p95_ms,
        result.p99_ms,
        result.achieved_per_s,
        result.error_count,
        None if rss is None else rss / MB,
        used / MB,
        note=_refusals(result),
        latencies_s=result.latencies_s,
        sent_at_s=result.sent_at_s,
    )


def judge(points: list[ScalingPoint], tolerance: float) -> None:
    """Each point's P95 against the empty case (the run's first point: the fewest accounts,
    nothing resting) and against its own level's empty point; memory per level."""
    if not points:
        return
    empty_case = points[0]
    for accounts in dict.fromkeys(p.accounts for p in points):
        level = [p for p in points if p.accounts == accounts]
        empty = level[0]
        steps = [p for p in level if p.resting > 0]
        for point in level:
            if point.p95_ms is not None and empty_case.p95_ms:
                point.p95_vs_empty = point.p95_ms / empty_case.p95_ms
            if point.p95_ms is not None and empty.p95_ms:
                point.p95_vs_level = point.p95_ms / empty.p95_ms
            point.memory_ok = memory_linear(empty, steps[0], point) if steps else True
            point.passed = (
                point.errors == 0
                and point.p95_vs_empty is not None
                and point.p95_vs_empty <= 1 + tolerance
                and point.memory_ok
            )


def memory_linear(empty: ScalingPoint, first: ScalingPoint, point: ScalingPoint) -> bool:
    """Memory grew no faster than the data: from the empty point to ``point``, at most
    ``GROWTH_FACTOR`` times the first step's growth per resting order (``first``: the
    first point with resting orders), plus a slack, for the gateway's RSS and for Redis."""
    if point.resting <= first.resting:
        return True
    scale = point.resting / first.resting

    def in_proportion(base: float, step: float, now: float, slack: float) -> bool:
        return now - base <= GROWTH_FACTOR * scale * max(step - base, 0.0) + slack

    ok = in_proportion(empty.redis_mb, first.redis_mb, point.redis_mb, REDIS_SLACK_MB)
    rss = (empty.gateway_rss_mb, first.gateway_rss_mb, point.gateway_rss_mb)
    if rss[0] is not None and rss[1] is not None and rss[2] is not None:
        ok = ok and in_proportion(rss[0], rss[1], rss[2], RSS_SLACK_MB)
    return ok


def create_keys(database_url: str, accounts: Sequence[str]) -> list[str]:
    """A trader key for each account, straight into the order log's key table."""

    async def run() -> list[str]:
        engine = create_engine(database_url)
        try:
            service = ApiKeyService(ApiKeyRepository(engine))
            return [(await service.create(account, Role.TRADER))[1] for account in accounts]
        finally:
            await engine.dispose()

    return asyncio.run(run())


class _Template:
    """The same orders from every account in turn: request ``n`` is account ``n % accounts``'s
    body ``(n // accounts) % bodies``, so any ``accounts`` requests in a row touch every
    account; ``renamed`` gives a phase its own order ids."""

    def __init__(self, port: int, keys: Sequence[str], bodies: Sequence[dict[str, Any]]):
        self._port, self._keys, self._bodies = port, keys, bodies

    def renamed(self, prefix: str) -> RequestTemplate:
        parts = [
            json_post_template(
                HOST,
                self._port,
                ORDERS_PATH,
                [body],
                "client_order_id",
                prefix,
                {"Authorization": f"Bearer {key}"},
            )
            for body in self._bodies
            for key in self._keys
        ]
        return RequestTemplate(
            tuple(p for t in parts for p in t.prefixes), tuple(s for t in parts for s in t.suffixes)
        )


HEADER = (
    "point                              resting  accounts  subs  P50 ms  P95 ms  vs empty"
    "  vs level  gateway MB  Redis MB  verdict"
)


def format_table(points: Sequence[ScalingPoint], options: ScalingOptions) -> str:
    lines = [
        f"order path at {options.rate:g}/s (open loop, {options.seconds:g} s a point); P95 "
        f"within {options.tolerance:.0%} of the empty case (the first point; 'vs level': of "
        "the accounts level's empty point); memory no faster than the data",
        HEADER,
    ]
    for p in points:
        verdict = "PASS" if p.passed else ("FAIL (memory)" if not p.memory_ok else "FAIL")
        lines.append(
            f"{p.name:<34} {p.resting:>8,} {p.accounts:>9,} {p.subscribers:>5}"
            f" {_ms(p.p50_ms):>7} {_ms(p.p95_ms):>7} {_ratio(p.p95_vs_empty):>9}"
            f" {_ratio(p.p95_vs_level):>9} {_mb(p.gateway_rss_mb):>11}"
            f" {p.redis_mb:>9.1f}  {verdict}  {p.note}".rstrip()
        )
    return "\n".join(lines)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def command(args: argparse.Namespace) -> int:
    """Entry point of ``python -m bench scaling``: run, print, write JSON and PNG."""
    from bench.plots import scaling_plot

    options = ScalingOptions(
        rate=args.rate,
        seconds=args.seconds,
        accounts=tuple(args.accounts),
        resting=tuple(args.resting),
        subscribers=args.subscribers,
    )
    points = run_scaling(options)
    print(format_table(points, options), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    document = {"options": asdict(options), "points": [p.summary() for p in points]}
    (args.out / "scaling.json").write_text(json.dumps(document, indent=1) + "\n")
    scaling_plot(points, args.out / "scaling.png")
    _progress(f"wrote {args.out / 'scaling.json'} and {args.out / 'scaling.png'}")
    return 0 if all(p.passed for p in points) else 1
