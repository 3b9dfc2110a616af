"""The tick processor and the signal worker against a real redis-server of their own: every
raw tick used exactly once whatever processors race or restart, every md:events entry
reaching the signals at least once and published once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from app.config import DEFAULT_UNIVERSE
from app.domain.marketdata import RawTick, process_batch
from app.domain.raw_signals import SignalSet
from app.feeds.csv_replay import replay_csv
from app.redisio.embedded import EmbeddedRedis
from app.redisio.multiplexed import MultiplexedRedis, pairs
from app.services.marketdata import TickProcessor
from app.services.signals import SignalEngine, SignalWorker
from app.storage.redis.keys import MarketDataKeys
from app.storage.redis.lease import Lease
from app.storage.redis.marketdata import MarketDataStore
from app.storage.redis.signals import SignalStore

SYMBOLS = {symbol: 2 for symbol in DEFAULT_UNIVERSE}  # each traded symbol's price decimals
T0_US = 1_772_461_800_000_000  # 2026-03-02 14:30 UTC


@pytest.fixture(scope="module")
def private_redis() -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis().start()
    yield server
    server.stop()


@pytest.fixture
async def redis(private_redis: EmbeddedRedis) -> AsyncIterator[MultiplexedRedis]:
    client = MultiplexedRedis(private_redis.url, reply_timeout_s=5.0)
    await client.execute("FLUSHDB")
    yield client
    await client.close()


def store_of(redis: MultiplexedRedis) -> MarketDataStore:
    return MarketDataStore(
        redis, raw_max_length=100_000, events_max_length=100_000, dead_max_length=10_000,
        bars_kept=500,
    )  # fmt: skip


def processor(redis: MultiplexedRedis, batch_size: int) -> TickProcessor:
    return TickProcessor(
        store_of(redis), redis, Lease(redis, "marketdata-processor"), SYMBOLS, None,
        batch_size=batch_size, block_ms=10,
    )  # fmt: skip


def raw_ticks(count: int, seed: int = 3) -> list[RawTick]:
    """Ticks over the universe, a few seconds apart, some bad (an unknown symbol, a price
    of zero), spanning several minutes."""
    symbols = sorted(SYMBOLS)
    ticks = []
    for n in range(count):
        symbol = symbols[(n * 7 + seed) % len(symbols)]
        price = "0" if n % 97 == 0 else f"{100 + (n * 13 % 50) / 10:.2f}"
        if n % 89 == 0:
            symbol = "ZZZZ"
        ticks.append(RawTick(symbol, price, str(n % 9 + 1), str(T0_US + n * 2_000_000), n))
    return ticks


async def events_of(redis: MultiplexedRedis) -> tuple[list[list[object]], list[dict[str, object]]]:
    entries = await redis.execute("XRANGE", MarketDataKeys.events, "-", "+")
    ticks: list[list[object]] = []
    bars: list[dict[str, object]] = []
    for _id, flat in entries:
        fields = pairs(flat)
        ticks += orjson.loads(fields[b"ticks"])
        bars += orjson.loads(fields[b"bars"])
    return ticks, bars


async def test_two_processors_racing_use_every_raw_tick_exactly_once(
    redis: MultiplexedRedis,
) -> None:
    raws = raw_ticks(3000)
    store = store_of(redis)
    for start in range(0, len(raws), 25):  # 120 batches
        await store.append_raw(raws[start : start + 25])
    first, second = processor(redis, 7), processor(redis, 13)

    async def drain(p: TickProcessor) -> None:
        idle = 0
        while idle < 3:  # three empty reads in a row: the stream is used up
            idle = idle + 1 if await p.process_once(block_ms=10) == 0 else 0

    await asyncio.gather(drain(first), drain(second))
    assert first.commits_lost + second.commits_lost > 0  # they did race

    once = process_batch({}, [(str(i), r) for i, r in enumerate(raws)], SYMBOLS)
    ticks, bars = await events_of(redis)
    assert len(ticks) == len(once.ticks)  # none twice, none lost
    assert sorted((t[0], t[3]) for t in ticks) == sorted((t.symbol, t.ts_us) for t in once.ticks)
    assert len(bars) == len(once.completed)
    counts = await store.dead_letter_counts()
    assert sum(counts.values()) == len(once.dead)
    last_entry = (await redis.execute("XREVRANGE", MarketDataKeys.raw, "+", "-", "COUNT", 1))[0][0]
    assert (await store.load_processor()).cursor == last_entry.decode()


async def test_a_processor_restarted_midway_goes_on_from_its_last_commit(
    redis: MultiplexedRedis,
) -> None:
    raws = raw_ticks(600, seed=5)
    store = store_of(redis)
    for start in range(0, len(raws), 100):  # 6 batches
        await store.append_raw(raws[start : start + 100])
    assert await processor(redis, 2).process_once(block_ms=10) == 200
    restarted = processor(redis, 1000)
    assert await restarted.process_once(block_ms=10) == 400
    assert await restarted.process_once(block_ms=10) == 0

    once = process_batch({}, [(str(i), r) for i, r in enumerate(raws)], SYMBOLS)
    ticks, bars = await events_of(redis)
    assert [(t[0], t[3]) for t in ticks] == [(t.symbol, t.ts_us) for t in once.ticks]
    assert len(bars) == len(once.completed)
    for symbol in SYMBOLS:  # each symbol's state as one pass over everything leaves it
        _, state = await store.symbol_state(symbol)
        assert state == once.changed.get(symbol)


async def test_csv_replay_sends_every_row_and_bad_rows_end_as_counted_dead_letters(
    redis: MultiplexedRedis, tmp_path: Path
) -> None:
    path = tmp_path / "ticks.csv"
    path.write_text(
        "timestamp,symbol,price,size\n"
        "2026-03-02T14:30:00Z,AAPL,230.10,100\n"
        "2026-03-02T14:30:01Z,AAPL,NaN,100\n"
        "2026-03-02T14:30:02Z,AAPL,inf,100\n"
        "2026-03-02T14:30:03Z,AAPL,230.20,-5\n"
        "2026-03-02T14:30:04Z,QQQQ,10,1\n"
        "2026-03-02T14:29:00Z,AAPL,229,1\n"
        "not a time,AAPL,230,1\n"
        "2026-03-02T14:30:05Z,AAPL,abc,1\n"
        "1772461865.5,AAPL,230.30,7\n"
    )
    store = store_of(redis)
    assert await replay_csv(path, speed=0, append=store.append_raw) == 9
    assert await processor(redis, 100).process_once(block_ms=10) == 9

    assert await store.dead_letter_counts() == {
        "price_not_finite": 2,
        "size_negative": 1,
        "unknown_symbol": 1,
        "time_backwards": 1,
        "malformed": 2,
    }
    price, state = await store.symbol_state("AAPL")
    assert price == Decimal("230.30")
    assert state is not None
    assert (state.bar.close, state.bar.volume) == (Decimal("230.30"), 7)  # 14:31's bar
    completed = await store.last_bar("AAPL")  # 14:30's: the first tick only
    assert completed is not None
    assert (completed.open, completed.volume) == (Decimal("230.10"), 100)


async def test_a_signal_worker_that_dies_before_acknowledging_is_caught_up_once(
    redis: MultiplexedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One entry a read: catching up must read on until nothing is pending.
    monkeypatch.setattr("app.services.signals.READ_COUNT", 1)
    store = store_of(redis)
    ticks = raw_ticks(400)
    for start in range(0, 400, 100):
        await store.append_raw(ticks[start : start + 100])
    await processor(redis, 1).process_once(block_ms=10)
    await processor(redis, 1000).process_once(block_ms=10)
    signals = SignalStore(redis)

    def worker() -> SignalWorker:
        engine = SignalEngine(SignalSet((2, 3), 1, 3, (1, 2)), "residual", {"momentum_2": 1.0})
        return SignalWorker(
            signals, store, redis, Lease(redis, "signal-worker"), engine, sorted(SYMBOLS),
            "worker", block_ms=10,
        )  # fmt: skip

    await signals.ensure_group()
    # A worker takes both entries and dies before acknowledging them.
    taken = await signals.read(redis, "worker", 100, block_ms=10)
    assert len(taken) == 2
    assert await redis.execute("XLEN", MarketDataKeys.signals) == 0

    restarted = worker()
    await restarted.load()  # claims what is pending, applies it, publishes a cycle a read
    assert restarted.cycles == 2
    assert await redis.execute("XLEN", MarketDataKeys.signals) == 2
    pending = await redis.execute("XPENDING", MarketDataKeys.events, "signals")
    assert pending[0] == 0

    again = worker()  # another restart: nothing pending, nothing published twice
    await again.load()
    assert await again.run_once(block_ms=10) == 0
    assert again.cycles == 0
    assert await redis.execute("XLEN", MarketDataKeys.signals) == 2
    latest = await signals.latest()
    assert set(latest) == set(SYMBOLS)


async def test_a_cycle_reaching_no_further_than_the_latest_values_is_not_published(
    redis: MultiplexedRedis,
) -> None:
    """A worker that lost its lease while computing publishes nothing behind its successor."""
    signals = SignalStore(redis)
    newer = {"AAPL": orjson.dumps({"composite": 1.0})}
    older = {"AAPL": orjson.dumps({"composite": -1.0})}
    assert await signals.publish({"n": 2}, newer, "1700000000001-5")
    assert not await signals.publish({"n": 1}, older, "1700000000001-4")  # behind
    assert not await signals.publish({"n": 2}, older, "1700000000001-5")  # the same again
    assert await signals.latest() == {"AAPL": {"composite": 1.0}}
    assert await redis.execute("XLEN", MarketDataKeys.signals) == 1
    assert await signals.publish({"n": 3}, older, "1700000000002-0")
    assert await signals.latest() == {"AAPL": {"composite": -1.0}}
