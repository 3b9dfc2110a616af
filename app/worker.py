"""The background worker (``ordergate worker``): the market-data feed, if one is set, the
tick processor, and the signal worker. Each part holds a lease of its own, so several
workers may run and one of each works at a time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from decimal import Decimal

from redis.exceptions import RedisError

from app.brokers.simulated import SimulatedBroker
from app.config import Settings
from app.domain.marketdata import RawTick
from app.domain.raw_signals import SignalSet
from app.feeds.csv_replay import replay_csv
from app.feeds.simulated import GbmPaths, run_simulated_feed
from app.runtime import marketdata_store, open_commands
from app.services.marketdata import TickProcessor
from app.services.signals import SignalEngine, SignalWorker
from app.storage.redis.lease import Lease
from app.storage.redis.marketdata import MarketDataStore
from app.storage.redis.signals import SignalStore

log = logging.getLogger(__name__)

BLOCK_MS = 1000
FEED_RETRY_S = 1.0


def signal_set(settings: Settings) -> SignalSet:
    s = settings.signals
    return SignalSet(
        tuple(s.momentum_lookbacks), s.reversal_lookback, s.volatility_lookback, s.volume_lookbacks
    )


@dataclass(slots=True)
class Worker:
    processor: TickProcessor
    signals: SignalWorker
    feed: asyncio.Task[None] | None


async def start_worker(settings: Settings, redis_url: str, stack: AsyncExitStack) -> Worker:
    redis = open_commands(redis_url, settings)
    stack.push_async_callback(redis.close)
    store = marketdata_store(redis, settings)
    universe = dict(settings.universe)

    processor_reader = open_commands(redis_url, settings, reply_timeout_s=BLOCK_MS / 1000 + 2)
    stack.push_async_callback(processor_reader.close)
    # The paper exchange's prices follow the last trades (resting orders they cross fill).
    venue = SimulatedBroker(redis, redis, settings.sim, universe)
    processor = TickProcessor(
        store,
        processor_reader,
        Lease(redis, "marketdata-processor"),
        {s: i.price_decimals for s, i in settings.instruments().items()},
        venue,
        batch_size=settings.marketdata.batch_size,
        block_ms=BLOCK_MS,
    )
    processor.start()
    stack.push_async_callback(processor.close)

    signals_reader = open_commands(redis_url, settings, reply_timeout_s=BLOCK_MS / 1000 + 2)
    stack.push_async_callback(signals_reader.close)
    engine = SignalEngine(signal_set(settings), settings.signals.method, settings.signals.weights)
    signals = SignalWorker(
        SignalStore(redis),
        store,
        signals_reader,
        Lease(redis, "signal-worker"),
        engine,
        list(universe),
        settings.signals.consumer,
        block_ms=BLOCK_MS,
    )
    signals.start()
    stack.push_async_callback(signals.close)

    feed = None
    if settings.marketdata.feed != "none":
        feed = asyncio.create_task(
            _run_feed(settings, store, Lease(redis, "marketdata-feed")), name="marketdata-feed"
        )
        stack.push_async_callback(_cancel, feed)
    return Worker(processor, signals, feed)


async def _run_feed(settings: Settings, store: MarketDataStore, lease: Lease) -> None:
    """The configured feed, while this worker holds the feed's lease (one feed at a time:
    two would send every tick twice)."""
    md = settings.marketdata

    async def append(ticks: list[RawTick]) -> None:
        if not await lease.hold():
            raise _LeaseLost
        await store.append_raw(ticks)

    while True:
        try:
            if not await lease.hold():
                await asyncio.sleep(FEED_RETRY_S)
                continue
            if md.feed == "simulated":
                sim = md.simulated
                symbols = sim.symbols or list(settings.universe)
                paths = GbmPaths(
                    {s: settings.universe.get(s, Decimal(100)) for s in symbols},
                    drift=sim.drift,
                    volatility=sim.volatility,
                    round_s=sim.time_scale / sim.rounds_per_s,
                    seed=sim.seed,
                    start_us=await _feed_clock_start(store),
                )
                await run_simulated_feed(paths, sim.rounds_per_s, append)
            elif md.csv.path is not None:
                sent = await replay_csv(md.csv.path, md.csv.speed, append)
                log.info("CSV replay of %s done: %d ticks", md.csv.path, sent)
                await asyncio.Event().wait()  # once; the worker stays up for signals
        except _LeaseLost:
            log.warning("market-data feed: lease lost; waiting to take it again")
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("market-data feed paused: %r", exc)
        await asyncio.sleep(FEED_RETRY_S)


class _LeaseLost(Exception):
    pass


async def _feed_clock_start(store: MarketDataStore) -> int:
    """A simulated feed resumes its clock after the newest tick processed (a restarted
    feed's ticks must not go back in time), else starts at the wall clock."""
    newest = await store.newest_tick_us()
    return max(newest or 0, time.time_ns() // 1000)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
