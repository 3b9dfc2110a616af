"""``python -m bench risk``: the pre-trade risk decision alone, against its floor, in one run.

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
import gc
import random
import secrets
import sys
import tempfile
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack, ExitStack
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import sqlalchemy
import uvloop
from redis.exceptions import RedisError

from app.config import Settings, get_settings
from app.domain.exposure import AccountImage, Settlement
from app.domain.orders import OrderIntent, OrderType, Side
from app.domain.risk import Reserved, RiskLimits, SymbolLimits
from app.redisio.embedded import EmbeddedRedis
from app.redisio.multiplexed import MultiplexedRedis
from app.runtime import open_commands, open_redis
from app.services.prices import ReferencePrices
from app.services.risk import RiskService
from app.storage.redis.keys import RiskKeys
from app.storage.redis.last_trades import LastTrades
from app.storage.redis.risk_state import RiskStore
from app.storage.sql.database import create_engine
from app.storage.sql.repositories import OrderRepository
from app.storage.sql.risk_repository import RiskRepository
from app.storage.sql.tables import metadata
from bench.arrivals import ArrivalClock, Call, Recorder, closed_loop, open_loop
from bench.risk_report import (
    ACCEPTED,
    FLOOR_OK,
    HELD,
    RiskBenchReport,
    RiskPhase,
    format_table,
)

ROUND_S = 0.5  # floor and decision take turns in rounds this long
FLOOR_KEY = "bench:risk:floor"
RELEASE_BATCH = 1000


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


class _Targets:
    """The two things measured, and the bookkeeping between rounds."""

    def __init__(
        self, redis: MultiplexedRedis, risk: RiskService, store: RiskStore, flow: OrderFlow
    ):
        self._redis = redis
        self._risk = risk
        self._store = store
        self._flow = flow
        self._next_order = 0
        self._open: list[Settlement] = []

    async def floor(self) -> str:
        await self._redis.execute("GET", FLOOR_KEY)
        return FLOOR_OK

    async def decide(self, order: BenchOrder) -> str:
        decision = await self._risk.reserve(order.account, order.client_order_id, order.intent)
        if decision.denial is not None:
            return decision.denial.code
        if decision.reserved is Reserved.ALREADY:
            return HELD
        self._open.append(Settlement(order.account, order.client_order_id, Decimal(0), final=True))
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
    floor: Recorder,
    decision: Recorder,
) -> None:
    total = round(rate * seconds)
    per_round = max(1, round(rate * ROUND_S))
    for first in range(0, total, per_round):
        count = min(per_round, total - first)
        await open_loop(clock, lambda _: targets.floor(), count, rate, floor)
        orders = targets.orders(count)
        await open_loop(clock, targets.deciding(orders), count, rate, decision)
        await targets.release()


async def _closed_phase(
    targets: _Targets, seconds: float, concurrency: int, floor: Recorder, decision: Recorder
) -> None:
    rounds = max(1, round(seconds / ROUND_S))
    for _ in range(rounds):
        floors = await closed_loop(lambda _: targets.floor(), seconds / rounds, concurrency, floor)
        # Orders made off the clock: as many as the floor managed, more than the decision will.
        orders = targets.orders(floors)
        await closed_loop(targets.deciding(orders), seconds / rounds, concurrency, decision)
        await targets.release()


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
        redis = open_commands(redis_url, settings)
        stack.push_async_callback(redis.close)
        notices = open_redis(redis_url)
        stack.push_async_callback(notices.aclose)
        engine = create_engine(database_url)
        stack.push_async_callback(engine.dispose)
        risk_repo = RiskRepository(engine)
        store = RiskStore(redis)
        risk = RiskService(
            notices=notices,
            store=store,
            risk_repo=risk_repo,
            orders=OrderRepository(engine),
            prices=ReferencePrices(LastTrades(redis), prices),
            default_limits=settings.risk.default_limits,
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
        await redis.execute("SET", FLOOR_KEY, "0")
        risk.start()  # the limits listener and the reference-price refresh, as in production
        stack.push_async_callback(risk.close)
        targets = _Targets(redis, risk, store, OrderFlow(accounts, prices, tag))

        # As the gateway does after start-up: the long-lived objects out of the collector's
        # view, so collections only walk garbage made while measuring.
        gc.collect()
        gc.freeze()
        stack.callback(gc.unfreeze)

        progress(f"warm-up: {options.warmup_s:g} s of each at {options.rate:g}/s")
        await _open_phase(targets, clock, options.warmup_s, options.rate, Recorder(), Recorder())
        if options.closed_seconds > 0:  # and the connections a closed loop keeps busy
            await _closed_phase(targets, ROUND_S, options.concurrency, Recorder(), Recorder())

        progress(f"open loop: {options.seconds:g} s of each at {options.rate:g}/s, interleaved")
        floor, decision = Recorder(), Recorder()
        await _open_phase(targets, clock, options.seconds, options.rate, floor, decision)
        mode = f"open@{options.rate:g}"
        report.phases.append(RiskPhase.summarize("floor", mode, options.rate, floor))
        report.phases.append(RiskPhase.summarize("decision", mode, options.rate, decision))

        if options.closed_seconds > 0:
            progress(f"closed loop: {options.closed_seconds:g} s of each, c={options.concurrency}")
            floor, decision = Recorder(), Recorder()
            await _closed_phase(
                targets, options.closed_seconds, options.concurrency, floor, decision
            )
            mode = f"closed c={options.concurrency}"
            report.phases.append(RiskPhase.summarize("floor", mode, None, floor))
            report.phases.append(RiskPhase.summarize("decision", mode, None, decision))
    return report


async def _forget(redis: MultiplexedRedis, accounts: Sequence[str]) -> None:
    """Leave a shared Redis as found (duplicate-window keys expire on their own)."""
    keys = [key for account in accounts for key in RiskKeys(account).all]
    await redis.execute("DEL", *keys, FLOOR_KEY)


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
    """Entry point of ``python -m bench risk``: run and print the table."""
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
