"""``ordergate bench risk``: the pre-trade risk decision alone, against its floor, in one run.

The decision is ``RiskService.reserve``: the account's limits (in-process cache, re-read from
Redis at most once a second), ``check_static`` in process, then one EVALSHA of
``risk_reserve.lua``. Its floor is the simplest thing that does the same I/O: a plain ``GET``
of one key through the same Redis client.

Both run in this process, on uvloop like the gateway, open loop at a constant arrival rate:
call ``n`` is due at ``t0 + n / rate`` whatever earlier calls are doing, and its latency runs
from then, so queueing shows. Floor and decision alternate in half-second rounds, so a noisy
neighbour hurts both alike. Between rounds, off the clock, the accepted reservations are
released (as the broker's fills and cancels would), so exposure and open orders stay bounded.
A closed-loop phase per target then measures the maximum throughput.

Redis: ``REDIS_URL`` if set, else a private redis-server on a unix socket (the production
default). The database, read only if Redis loses an account, is a temporary SQLite file.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import os
import random
import secrets
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AsyncExitStack, ExitStack
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy
import uvloop
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.config import Settings, get_settings
from app.domain.errors import RiskRejected, RiskUnavailable
from app.domain.orders import OrderIntent, OrderType, Side
from app.domain.risk import RiskLimits, SymbolLimits
from app.process import die_with_parent
from app.runtime import open_redis
from app.services.prices import ReferencePrices
from app.services.risk import RiskService
from app.storage.database import create_engine
from app.storage.embedded_redis import EmbeddedRedis
from app.storage.keys import RiskKeys
from app.storage.repositories import OrderRepository
from app.storage.risk_repository import RiskRepository
from app.storage.risk_state import AccountImage, RiskStore, Settlement
from app.storage.tables import metadata

# From the issue: the decision alone, on the 2-core machine.
P95_TARGET_MS = 0.5
P99_TARGET_MS = 1.0
SUSTAIN_SHARE = 0.99
ROUND_S = 0.5  # floor and decision take turns in rounds this long
FLOOR_KEY = "bench:risk:floor"
ACCEPTED, HELD, FLOOR_OK = "accepted", "held", "ok"
RELEASE_BATCH = 1000

Call = Coroutine[Any, Any, str]


@dataclass(frozen=True, slots=True)
class RiskBenchOptions:
    rate: float = 500.0
    seconds: float = 10.0
    accounts: int = 20
    warmup_s: float = 1.0
    closed_seconds: float = 2.0  # 0: no closed-loop phase
    concurrency: int = 16

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RiskBenchOptions:
        options = cls(
            rate=args.rate,
            seconds=args.seconds,
            accounts=args.accounts,
            warmup_s=args.warmup,
            closed_seconds=args.closed_seconds,
            concurrency=args.concurrency,
        )
        if options.rate <= 0 or options.seconds <= 0 or options.accounts <= 0:
            raise ValueError("--rate, --seconds and --accounts must be positive")
        if options.concurrency <= 0:
            raise ValueError("--concurrency must be positive")
        return options


def bench_limits(symbols: Sequence[str]) -> RiskLimits:
    """Every check armed, none near its bound under the bench's order flow (see
    ``OrderFlow``), so almost every order is accepted after running all of them. Sized for a
    round's worth of open orders on a few accounts; a closed loop on one or two accounts can
    reach ``max_open_orders``, and the table then shows those rejects by code."""
    return RiskLimits(
        max_order_qty=Decimal(1000),
        max_order_notional=Decimal(250_000),
        price_collar_pct=Decimal(1),
        max_position=Decimal(20_000),
        max_gross_notional=Decimal(50_000_000),
        max_open_orders=2000,
        duplicate_window_ms=500,
        symbols={
            symbols[0]: SymbolLimits(max_order_qty=Decimal(500), max_position=Decimal(10_000))
        },
    )


@dataclass(frozen=True, slots=True)
class BenchOrder:
    account: str
    client_order_id: str
    intent: OrderIntent


class OrderFlow:
    """The bench's orders, made in sequence. Accounts take turns; each account's symbol and
    quantity cycle with periods ``len(symbols)`` and 199 (a prime), so an account repeats a
    (symbol, side, qty, price) signature only thousands of orders later, far outside the
    duplicate window. Side and market/limit are random; limit prices stay within half the
    collar of the reference price."""

    QTY_CYCLE = 199

    def __init__(self, accounts: Sequence[str], prices: dict[str, Decimal], tag: str) -> None:
        self._accounts = list(accounts)
        self._symbols = sorted(prices)
        self._prices = prices
        self._tag = tag
        self._rng = random.Random(1)  # the same flow every run

    def order(self, n: int) -> BenchOrder:
        account = self._accounts[n % len(self._accounts)]
        k = n // len(self._accounts)  # this account's k-th order
        symbol = self._symbols[k % len(self._symbols)]
        side = Side.BUY if self._rng.random() < 0.5 else Side.SELL
        limit_price = None
        if self._rng.random() < 0.5:
            offset = Decimal(self._rng.randint(-50, 50)) / 10_000  # within +/- 0.5 %
            limit_price = (self._prices[symbol] * (1 + offset)).quantize(Decimal("0.01"))
        client_order_id = f"{self._tag}-{n:08d}"
        intent = OrderIntent(
            symbol=symbol,
            side=side,
            qty=Decimal(1 + k % self.QTY_CYCLE),
            type=OrderType.MARKET if limit_price is None else OrderType.LIMIT,
            limit_price=limit_price,
            client_order_id=client_order_id,
        )
        return BenchOrder(account, client_order_id, intent)


# -- measuring ---------------------------------------------------------------------------------
@dataclass(slots=True)
class _Recorder:
    latencies: list[float] = field(default_factory=list)  # from the intended start
    service: list[float] = field(default_factory=list)  # from the actual start
    send_lags: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    started: int = 0
    window_s: float = 0.0  # summed over slices: first start to last completion
    last_done: float = 0.0


async def _timed(call: Call, due: float, started: float, rec: _Recorder) -> None:
    try:
        outcome = await call
    except (RiskUnavailable, RedisError, OSError, TimeoutError) as exc:
        rec.errors[type(exc).__name__] += 1  # reported, and no latency: it decided nothing
        return
    done = time.perf_counter()
    rec.latencies.append(done - due)
    rec.service.append(done - started)
    rec.outcomes[outcome] += 1
    rec.last_done = max(rec.last_done, done)


class ArrivalClock:
    """Arrivals at a constant rate, from a child process that sleeps until each call is due
    and then writes one byte to a pipe. The loop wakes for it as for a request on a socket;
    the clock shares no GIL with the loop and never spins. (The loop's own timers tick in
    milliseconds, too coarse for calls due every half millisecond; a thread would fight the
    loop for the GIL; a loop spinning to be punctual would take a core from Redis.)"""

    _SOURCE = textwrap.dedent(
        """
        import ctypes, os, sys, time
        try:  # Linux wakes a sleeper up to 50 us late by default (timer slack): ask for 1 us
            ctypes.CDLL(None).prctl(29, 1000, 0, 0, 0)
        except (OSError, AttributeError):
            pass
        for line in sys.stdin:  # "t0 rate count": a byte for each call n at t0 + n / rate
            t0, rate, count = line.split()
            t0, rate = float(t0), float(rate)
            for n in range(int(count)):
                delay = t0 + n / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                os.write(1, b".")
        """
    )

    def __init__(self) -> None:
        # perf_counter is CLOCK_MONOTONIC: the child's times and ours are the same clock.
        self._process = subprocess.Popen(
            [sys.executable, "-S", "-c", self._SOURCE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            preexec_fn=die_with_parent,
        )
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._commands = self._process.stdin
        self.fd = self._process.stdout.fileno()
        os.set_blocking(self.fd, False)

    def schedule(self, t0: float, rate: float, count: int) -> None:
        """One tick per call ``n`` at ``t0 + n / rate``."""
        self._commands.write(f"{t0!r} {rate!r} {count}\n".encode())
        self._commands.flush()

    def close(self) -> None:
        self._commands.close()  # the child's stdin ends: it exits
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()

    def __enter__(self) -> ArrivalClock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _open_loop(
    clock: ArrivalClock, make: Callable[[int], Call], count: int, rate: float, rec: _Recorder
) -> None:
    """Start call ``n`` (of ``count``) at ``t0 + n / rate``, as ``clock`` ticks; its latency
    counts from then. Woken late, the due calls start at once: none is skipped."""
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []
    every_call_started = loop.create_future()
    t0 = time.perf_counter() + 0.002

    def on_ticks() -> None:
        now = time.perf_counter()
        try:
            ticks = len(os.read(clock.fd, 65536))
        except BlockingIOError:
            return
        for _ in range(ticks):
            n = len(tasks)
            due = t0 + n / rate
            rec.send_lags.append(now - due)
            tasks.append(loop.create_task(_timed(make(n), due, now, rec)))
        if len(tasks) >= count:
            loop.remove_reader(clock.fd)
            every_call_started.set_result(None)

    loop.add_reader(clock.fd, on_ticks)
    clock.schedule(t0, rate, count)
    try:
        await every_call_started
    finally:
        loop.remove_reader(clock.fd)
    await asyncio.gather(*tasks)
    rec.started += count
    rec.window_s += max(rec.last_done, t0) - t0


async def _closed_loop(
    make: Callable[[int], Call], seconds: float, concurrency: int, rec: _Recorder
) -> int:
    """Keep ``concurrency`` calls in flight for ``seconds``; returns how many were started."""
    numbers = itertools.count()
    t0 = time.perf_counter()
    deadline = t0 + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            call = make(next(numbers))  # the call's arguments are made off its clock
            start = time.perf_counter()
            await _timed(call, start, start, rec)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    started = next(numbers)
    rec.started += started
    rec.window_s += time.perf_counter() - t0
    return started


class _Targets:
    """The two things measured, and the bookkeeping between rounds."""

    def __init__(self, redis: Redis, risk: RiskService, store: RiskStore, flow: OrderFlow):
        self._redis = redis
        self._risk = risk
        self._store = store
        self._flow = flow
        self._next_order = 0
        self._open: list[Settlement] = []

    async def floor(self) -> str:
        await self._redis.get(FLOOR_KEY)
        return FLOOR_OK

    async def decide(self, order: BenchOrder) -> str:
        try:
            reserved = await self._risk.reserve(order.account, order.client_order_id, order.intent)
        except RiskRejected as exc:
            return exc.code
        if not reserved:
            return HELD
        self._open.append(Settlement(order.account, order.client_order_id, None, final=True))
        return ACCEPTED

    def orders(self, count: int) -> list[BenchOrder]:
        """The next ``count`` orders, made before the clock starts."""
        first, self._next_order = self._next_order, self._next_order + count
        return [self._flow.order(first + i) for i in range(count)]

    def deciding(self, orders: list[BenchOrder]) -> Callable[[int], Call]:
        """Call ``i`` decides ``orders[i]``; past their end (a closed loop that outran its
        estimate), an order made on the spot."""

        def make(i: int) -> Call:
            return self.decide(orders[i] if i < len(orders) else self.orders(1)[0])

        return make

    async def release(self) -> None:
        """Give back what the accepted orders reserved, many per round trip (off the clock)."""
        while self._open:
            batch, self._open = self._open[:RELEASE_BATCH], self._open[RELEASE_BATCH:]
            await self._store.settle(batch)


async def _open_phase(
    targets: _Targets,
    clock: ArrivalClock,
    seconds: float,
    rate: float,
    floor: _Recorder,
    decision: _Recorder,
) -> None:
    total = round(rate * seconds)
    per_round = max(1, round(rate * ROUND_S))
    for first in range(0, total, per_round):
        count = min(per_round, total - first)
        await _open_loop(clock, lambda _: targets.floor(), count, rate, floor)
        orders = targets.orders(count)
        await _open_loop(clock, targets.deciding(orders), count, rate, decision)
        await targets.release()


async def _closed_phase(
    targets: _Targets, seconds: float, concurrency: int, floor: _Recorder, decision: _Recorder
) -> None:
    rounds = max(1, round(seconds / ROUND_S))
    for _ in range(rounds):
        floors = await _closed_loop(lambda _: targets.floor(), seconds / rounds, concurrency, floor)
        # Orders made off the clock: as many as the floor managed, more than the decision will.
        orders = targets.orders(floors)
        await _closed_loop(targets.deciding(orders), seconds / rounds, concurrency, decision)
        await targets.release()


# -- results -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RiskPhase:
    """One target in one mode. Latencies (ms) are of every completed call, rejects included:
    a rejection is a decision too. ``errors``: calls that decided nothing (Redis failed)."""

    target: str  # "floor" or "decision"
    mode: str
    offered_per_s: float | None
    started: int
    completed: int
    outcomes: dict[str, int]
    errors: dict[str, int]
    achieved_per_s: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    # From the call's actual start, not its intended one: the call alone, without the time
    # it waited for the loop (the start lag).
    service_p50_ms: float | None
    service_p95_ms: float | None
    service_p99_ms: float | None
    send_lag_p50_ms: float | None
    send_lag_p99_ms: float | None

    @property
    def accepted(self) -> int:
        return self.outcomes.get(ACCEPTED, 0)

    @property
    def rejected(self) -> dict[str, int]:
        return {k: v for k, v in self.outcomes.items() if k not in (ACCEPTED, HELD, FLOOR_OK)}

    @classmethod
    def summarize(cls, target: str, mode: str, offered: float | None, rec: _Recorder) -> RiskPhase:
        lat = _percentiles_ms(rec.latencies, (50, 95, 99, 100))
        service = _percentiles_ms(rec.service, (50, 95, 99))
        lag = _percentiles_ms(rec.send_lags, (50, 99))
        return cls(
            target=target,
            mode=mode,
            offered_per_s=offered,
            started=rec.started,
            completed=len(rec.latencies),
            outcomes=dict(rec.outcomes),
            errors=dict(rec.errors),
            achieved_per_s=len(rec.latencies) / rec.window_s if rec.window_s > 0 else 0.0,
            p50_ms=lat[0],
            p95_ms=lat[1],
            p99_ms=lat[2],
            max_ms=lat[3],
            service_p50_ms=service[0],
            service_p95_ms=service[1],
            service_p99_ms=service[2],
            send_lag_p50_ms=lag[0],
            send_lag_p99_ms=lag[1],
        )


def _percentiles_ms(samples: list[float], qs: tuple[int, ...]) -> list[float | None]:
    if not samples:
        return [None] * len(qs)
    return [float(v) for v in np.percentile(np.asarray(samples) * 1000.0, qs)]


@dataclass(slots=True)
class RiskBenchReport:
    settings: dict[str, Any]
    phases: list[RiskPhase] = field(default_factory=list)

    def find(self, target: str, closed: bool) -> RiskPhase | None:
        for phase in self.phases:
            if phase.target == target and (phase.offered_per_s is None) == closed:
                return phase
        return None

    def latency_ratio(self, attr: str) -> float | None:
        """Decision over floor at one percentile (``p50_ms`` ...), open loop, this run."""
        decision, floor = self.find("decision", False), self.find("floor", False)
        if decision is None or floor is None:
            return None
        d, f = getattr(decision, attr), getattr(floor, attr)
        return None if d is None or not f else float(d / f)

    @property
    def throughput_ratio(self) -> float | None:
        decision, floor = self.find("decision", True), self.find("floor", True)
        if decision is None or floor is None or floor.achieved_per_s <= 0:
            return None
        return decision.achieved_per_s / floor.achieved_per_s

    def verdicts(self) -> dict[str, bool | None]:
        d = self.find("decision", False)
        if d is None:
            return {"sustained": None, "p95": None, "p99": None}
        offered = d.offered_per_s or 0.0
        return {
            "sustained": not d.errors
            and d.completed == d.started
            and d.achieved_per_s >= SUSTAIN_SHARE * offered,
            "p95": d.p95_ms is not None and d.p95_ms <= P95_TARGET_MS,
            "p99": d.p99_ms is not None and d.p99_ms <= P99_TARGET_MS,
        }


_HEADER = ("target", "mode", "offered/s", "achieved/s", "calls", "p50_ms", "p95_ms", "p99_ms")
_WIDTHS = (10, 13, 10, 11, 8, 8, 8, 8, 8, 0)


def format_table(report: RiskBenchReport) -> str:
    """One line per phase, then the decision/floor ratios and the target verdicts."""
    lines = [_line((*_HEADER, "max_ms", "outcomes"))]
    for p in report.phases:
        offered = "-" if p.offered_per_s is None else f"{p.offered_per_s:g}"
        cells = (p.target, p.mode, offered, f"{p.achieved_per_s:.1f}", str(p.completed))
        ms = tuple(_ms(v) for v in (p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms))
        lines.append(_line((*cells, *ms, _outcomes(p))))
    lines.append("")
    ratios = "  ".join(
        f"{name} {_ratio(report.latency_ratio(attr))}"
        for name, attr in (("P50", "p50_ms"), ("P95", "p95_ms"), ("P99", "p99_ms"))
    )
    lines.append(f"decision/floor latency ratio (open loop): {ratios}")
    lines.append(f"decision/floor max throughput ratio: {_ratio(report.throughput_ratio)}")
    v = report.verdicts()
    rate = report.settings.get("rate", 0.0)
    lines.append(
        f"decision at {rate:g}/s: sustained {_verdict(v['sustained'])} ; "
        f"P95 target <= {P95_TARGET_MS:g} ms: {_verdict(v['p95'])} ; "
        f"P99 target <= {P99_TARGET_MS:g} ms: {_verdict(v['p99'])}"
    )
    for p in report.phases:
        rejected = p.rejected
        if rejected:
            detail = ", ".join(f"{code} {n}" for code, n in sorted(rejected.items()))
            lines.append(f"rejected by {p.target} ({p.mode}): {detail}")
    # Latency counts from the intended start, so a late start (the loop busy, the process
    # descheduled) is inside it. Shown apart, with the calls timed from their actual start.
    for p in report.phases:
        if p.offered_per_s is not None:
            lines.append(
                f"{p.target} ({p.mode}): start lag p50 {_ms(p.send_lag_p50_ms)} "
                f"p99 {_ms(p.send_lag_p99_ms)} ms; from the actual start "
                f"p50 {_ms(p.service_p50_ms)} p95 {_ms(p.service_p95_ms)} "
                f"p99 {_ms(p.service_p99_ms)} ms"
            )
    return "\n".join(lines)


def _line(cells: tuple[str, ...]) -> str:
    return "".join(
        cell.ljust(width) if width else cell for cell, width in zip(cells, _WIDTHS, strict=True)
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _outcomes(p: RiskPhase) -> str:
    if p.target == "floor":
        text = f"ok {p.outcomes.get(FLOOR_OK, 0)}"
    else:
        text = f"accepted {p.accepted}, rejected {sum(p.rejected.values())}"
        if p.outcomes.get(HELD):
            text += f", held {p.outcomes[HELD]}"
    if p.errors:
        text += ", errors " + " ".join(f"{k}:{n}" for k, n in sorted(p.errors.items()))
    return text


def _verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("PASS" if met else "MISS")


# -- running -----------------------------------------------------------------------------------
def _progress(message: str) -> None:
    # Progress goes to stderr so stdout carries only the table.
    print(message, file=sys.stderr, flush=True)


def create_database(path: Path) -> str:
    """A fresh SQLite database with the gateway's schema; returns its async URL."""
    sync_engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    try:
        metadata.create_all(sync_engine)
    finally:
        sync_engine.dispose()
    return f"sqlite+aiosqlite:///{path}"


async def measure_risk(
    options: RiskBenchOptions,
    settings: Settings,
    redis_url: str,
    database_url: str,
    clock: ArrivalClock,
    progress: Callable[[str], None] = _progress,
) -> RiskBenchReport:
    """Set up accounts, run every phase, clean up; return what was measured."""
    report = RiskBenchReport(settings={**asdict(options), "round_s": ROUND_S})
    prices = dict(settings.universe)
    tag = f"brisk-{secrets.token_hex(3)}"  # keys and order ids unique on a shared Redis
    accounts = [f"{tag}-{i:03d}" for i in range(options.accounts)]
    limits = bench_limits(sorted(prices))
    async with AsyncExitStack() as stack:
        redis = open_redis(redis_url)
        stack.push_async_callback(redis.aclose)
        engine = create_engine(database_url)
        stack.push_async_callback(engine.dispose)
        risk_repo = RiskRepository(engine)
        store = RiskStore(redis)
        risk = RiskService(
            redis=redis,
            store=store,
            risk_repo=risk_repo,
            orders=OrderRepository(engine),
            prices=ReferencePrices(redis, prices),
            default_limits=settings.risk.default_limits,
            redis_timeout_s=settings.risk.redis_timeout_ms / 1000,
            limits_ttl_s=settings.risk.limits_cache_ttl_s,
        )
        stack.push_async_callback(_forget, redis, accounts)

        progress(f"loading {len(accounts)} accounts into Redis at {redis_url}")
        now = datetime.now(UTC)
        no_kill = (False, 0)
        for account in accounts:
            # The database too, so a rebuild (Redis lost the account) gives the same limits.
            await risk_repo.put_limits(account, limits, "bench", now)
            image = AccountImage(limits, no_kill, no_kill, {}, prices, [])
            await store.load(account, image, replace=True)
        await redis.set(FLOOR_KEY, "0")
        risk.start()  # the limits listener and the reference-price refresh, as in production
        stack.push_async_callback(risk.close)
        targets = _Targets(redis, risk, store, OrderFlow(accounts, prices, tag))

        # As the gateway does after start-up: the long-lived objects out of the collector's
        # view, so collections only walk garbage made while measuring.
        gc.collect()
        gc.freeze()
        stack.callback(gc.unfreeze)

        progress(f"warm-up: {options.warmup_s:g} s of each at {options.rate:g}/s")
        await _open_phase(targets, clock, options.warmup_s, options.rate, _Recorder(), _Recorder())
        if options.closed_seconds > 0:  # and the connections a closed loop keeps busy
            await _closed_phase(targets, ROUND_S, options.concurrency, _Recorder(), _Recorder())

        progress(f"open loop: {options.seconds:g} s of each at {options.rate:g}/s, interleaved")
        floor, decision = _Recorder(), _Recorder()
        await _open_phase(targets, clock, options.seconds, options.rate, floor, decision)
        mode = f"open@{options.rate:g}"
        report.phases.append(RiskPhase.summarize("floor", mode, options.rate, floor))
        report.phases.append(RiskPhase.summarize("decision", mode, options.rate, decision))

        if options.closed_seconds > 0:
            progress(f"closed loop: {options.closed_seconds:g} s of each, c={options.concurrency}")
            floor, decision = _Recorder(), _Recorder()
            await _closed_phase(
                targets, options.closed_seconds, options.concurrency, floor, decision
            )
            mode = f"closed c={options.concurrency}"
            report.phases.append(RiskPhase.summarize("floor", mode, None, floor))
            report.phases.append(RiskPhase.summarize("decision", mode, None, decision))
    return report


async def _forget(redis: Redis, accounts: Sequence[str]) -> None:
    """Leave a shared Redis as found (duplicate-window keys expire on their own)."""
    keys = [key for account in accounts for key in RiskKeys(account).all]
    await redis.delete(*keys, FLOOR_KEY)


def run_risk_bench(
    options: RiskBenchOptions, settings: Settings, progress: Callable[[str], None] = _progress
) -> RiskBenchReport:
    """Start what is needed (a private Redis unless ``REDIS_URL``), measure, stop it all."""
    with ExitStack() as stack:
        redis_url = settings.redis_url
        if redis_url is None:
            progress("starting a private redis-server")
            redis_url = stack.enter_context(EmbeddedRedis()).url
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="og-bench-risk-")))
        database_url = create_database(tmp / "risk.db")
        clock = stack.enter_context(ArrivalClock())
        return uvloop.run(measure_risk(options, settings, redis_url, database_url, clock, progress))


def command(args: argparse.Namespace) -> int:
    """Entry point of ``ordergate bench risk``: run and print the table."""
    try:
        options = RiskBenchOptions.from_args(args)
        report = run_risk_bench(options, get_settings())
    except KeyboardInterrupt:
        _progress("interrupted; everything started has been stopped")
        return 130
    except (RuntimeError, ValueError, OSError, RedisError) as exc:
        _progress(f"bench risk failed: {exc}")
        return 1
    print(format_table(report), flush=True)
    return 0
