"""The signal worker: market data in, cross-sectional signals out.

It reads ``md:events`` through the consumer group ``signals`` (one worker at a time, by the
lease ``signal-worker``): each entry is applied to rolling windows per symbol (completed
1-minute bars by their start, so an entry applied twice changes nothing; the last trade
only moves forward in time), then one cycle computes every symbol's raw signals, their
cross-sectional z-scores, orthogonalization and composite, and publishes them, and only
then are the entries acknowledged. A worker that dies leaves its entries pending: the next
one claims them, applies them again, and does not publish again what was published
(the latest values name the last entry behind them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from app.domain.errors import SymbolNotFound
from app.domain.marketdata import BAR_US
from app.domain.panel_cache import PanelCache
from app.domain.raw_signals import SignalSet, raw_signals
from app.domain.signal_math import composite, orthogonalize, zscore
from app.redisio.multiplexed import MultiplexedRedis
from app.services.leased_loop import LeasedLoop
from app.services.metrics import SIGNAL_CYCLE
from app.storage.redis.lease import Lease
from app.storage.redis.marketdata import MarketDataStore
from app.storage.redis.signals import MarketEvents, SignalStore, entry_id_key

log = logging.getLogger(__name__)

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

READ_COUNT = 1000


@dataclass(frozen=True, slots=True)
class SignalCycle:
    """One computation over the whole universe."""

    ts_us: int  # the newest tick's time (the feed's clock)
    received_ns: int  # when the earliest tick in it reached the gateway
    names: list[str]
    symbols: list[str]
    raw: FloatArray  # (N, K)
    orthogonal: FloatArray  # (N, K)
    composite: FloatArray  # (N,)


class SignalWindows:
    """Each symbol's recent completed bars (close, volume) by the bar's start, one row of
    the universe per start, and each symbol's last trade."""

    def __init__(self, symbols: list[str], signals: SignalSet) -> None:
        self.symbols = symbols
        self._signals = signals
        self._index = {s: i for i, s in enumerate(symbols)}
        self._rows: dict[int, FloatArray] = {}  # start -> (2, N): closes, volumes
        self.last_price = np.full(len(symbols), np.nan)
        self._last_ts = np.zeros(len(symbols), dtype=np.int64)
        self.newest_ts_us = 0

    def add_bars(self, bars: Iterable[tuple[str, int, float, float]]) -> None:
        """Completed bars (symbol, start, close, volume); a bar seen before is set again
        to the same values."""
        by_start: dict[int, list[tuple[int, float, float]]] = {}
        for symbol, start_us, close, volume in bars:
            i = self._index.get(symbol)
            if i is not None:
                by_start.setdefault(start_us, []).append((i, close, volume))
        keep = self._signals.window
        for start_us, values in sorted(by_start.items()):
            row = self._rows.get(start_us)
            if row is None:
                if len(self._rows) >= keep and start_us < min(self._rows):
                    continue  # older than every bar the windows need
                row = self._rows[start_us] = np.full((2, len(self.symbols)), np.nan)
                if len(self._rows) > keep:
                    del self._rows[min(self._rows)]
            columns = np.array(values).T
            row[:, columns[0].astype(np.intp)] = columns[1:]

    def add_trades(self, trades: Iterable[tuple[str, float, int]]) -> None:
        """Trades (symbol, price, time) in time order per symbol; one older than the
        symbol's last changes nothing."""
        last = {symbol: (price, ts_us) for symbol, price, ts_us in trades}  # the last wins
        found = [(i, p, ts) for s, (p, ts) in last.items() if (i := self._index.get(s)) is not None]
        if not found:
            return
        columns = np.array(found).T
        index = columns[0].astype(np.intp)
        ts = columns[2].astype(np.int64)
        newer = ts >= self._last_ts[index]
        self._last_ts[index[newer]] = ts[newer]
        self.last_price[index[newer]] = columns[1][newer]
        self.newest_ts_us = max(self.newest_ts_us, int(ts.max()))

    def panels(self) -> tuple[FloatArray, FloatArray]:
        """closes (W, N), ending with the last trades, and the bars' volumes (W - 1, N):
        the W - 1 minutes up to the newest completed bar (NaN where a symbol had none)."""
        rows = self._signals.window - 1
        stacked = np.full((rows, 2, len(self.symbols)), np.nan)
        if self._rows:
            newest = max(self._rows)
            for r in range(rows):
                row = self._rows.get(newest - (rows - 1 - r) * BAR_US)
                if row is not None:
                    stacked[r] = row
        closes = np.vstack([stacked[:, 0], self.last_price[np.newaxis]])
        return closes, stacked[:, 1].copy()


class SignalEngine:
    """The math of one cycle, from the windows: raw signals, z-score, orthogonalization,
    composite. Identical inputs are answered from a cache keyed by their exact bytes."""

    def __init__(
        self, signals: SignalSet, method: str, weights: dict[str, float], cache_entries: int = 64
    ) -> None:
        self.signals = signals
        self.method = method
        self.weights = np.array([weights.get(name, 0.0) for name in signals.names])
        self._cache = PanelCache(max_entries=cache_entries)

    def compute(self, windows: SignalWindows, received_ns: int) -> SignalCycle:
        closes, volumes = windows.panels()
        raw = raw_signals(self.signals, closes, volumes)
        params = (self.method, tuple(self.weights.tolist()))
        # One panel cached per input: the orthogonal signals and, last, the composite.
        result = self._cache.get_or_compute(raw[np.newaxis], params, self._pipeline)[0]
        return SignalCycle(
            windows.newest_ts_us,
            received_ns,
            self.signals.names,
            windows.symbols,
            raw,
            result[:, :-1],
            result[:, -1],
        )

    def _pipeline(self, panel: FloatArray) -> FloatArray:
        orthogonal = orthogonalize(zscore(panel), method=self.method)
        combined = composite(orthogonal, self.weights)
        return np.concatenate([orthogonal, combined[:, :, np.newaxis]], axis=2)


def cycle_documents(
    cycle: SignalCycle, published_ns: int
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The ``signals`` stream entry, and each symbol's latest values (JSON; NaN, a signal
    a symbol lacks the history for, is null)."""
    # Rounded once for all, as arrays: per value in Python this was most of a cycle.
    composite = np.round(cycle.composite, 10).tolist()
    raw = np.round(cycle.raw, 10).tolist()
    orthogonal = np.round(cycle.orthogonal, 10).tolist()
    names = cycle.names
    entry = {
        "ts_us": cycle.ts_us,
        "received_ns": cycle.received_ns,
        "published_ns": published_ns,
        "composite": dict(zip(cycle.symbols, composite, strict=True)),
    }
    latest = {
        symbol: orjson.dumps(
            {
                "symbol": symbol,
                "ts_us": cycle.ts_us,
                "composite": composite[i],
                "raw": dict(zip(names, raw[i], strict=True)),
                "orthogonal": dict(zip(names, orthogonal[i], strict=True)),
            }
        )
        for i, symbol in enumerate(cycle.symbols)
    }
    return entry, latest


class SignalWorker(LeasedLoop):
    name = "signal-worker"

    def __init__(
        self,
        store: SignalStore,
        marketdata: MarketDataStore,
        reader: MultiplexedRedis,
        lease: Lease,
        engine: SignalEngine,
        symbols: list[str],
        consumer: str,
        *,
        block_ms: int = 1000,
    ) -> None:
        super().__init__(lease)
        self._store = store
        self._marketdata = marketdata
        self._reader = reader
        self._engine = engine
        self._symbols = symbols
        self._consumer = consumer
        self._block_ms = block_ms
        self._windows: SignalWindows | None = None  # None: to be loaded
        self._published: tuple[int, int] = (0, 0)
        self.cycles = 0

    async def step(self) -> None:
        if self._windows is None:
            await self.load()
        await self.run_once()

    def reset(self) -> None:
        self._windows = None  # loaded again from Redis by the next holder

    async def load(self) -> None:
        """The windows from what Redis holds (completed bars, last trades), then the
        entries this worker (or a dead one) was given and never acknowledged."""
        await self._store.ensure_group()
        windows = SignalWindows(self._symbols, self._engine.signals)
        windows.add_bars(
            (b.symbol, b.start_us, float(b.close), float(b.volume))
            for b in await self._marketdata.recent_bars(self._engine.signals.window)
        )
        # Each symbol's last trade is its forming bar's close: one read for them all.
        processor = await self._marketdata.load_processor()
        windows.add_trades(
            (symbol, float(state.bar.close), state.last_ts_us)
            for symbol, state in processor.symbols.items()
        )
        published = await self._store.last_published_event()
        self._published = entry_id_key(published) if published else (0, 0)
        self._windows = windows
        await self._store.claim_abandoned(self._consumer, min_idle_ms=0)
        while pending := await self._store.read(self._reader, self._consumer, READ_COUNT, None):
            await self._handle(pending)  # acknowledged, so the next read gives the rest

    async def run_once(self, block_ms: int | None = None) -> int:
        """Wait for new entries, apply them, publish a cycle, acknowledge; the entries."""
        events = await self._store.read(
            self._reader,
            self._consumer,
            READ_COUNT,
            self._block_ms if block_ms is None else block_ms,
        )
        await self._handle(events)
        return len(events)

    async def _handle(self, events: list[MarketEvents]) -> None:
        windows = self._windows
        if not events or windows is None:
            return
        started = time.perf_counter()
        fresh = [e for e in events if entry_id_key(e.entry_id) > self._published]
        for event in events:
            windows.add_bars(
                (b["symbol"], int(b["start_us"]), float(b["close"]), float(b["volume"]))
                for b in event.bars
            )
            windows.add_trades((s, float(p), int(ts)) for s, p, _q, ts in event.ticks)
        if fresh:
            received = [e.received_ns for e in fresh if e.received_ns]
            cycle = self._engine.compute(windows, min(received) if received else 0)
            entry, latest = cycle_documents(cycle, time.time_ns())
            last_event = fresh[-1].entry_id
            if await self._store.publish(entry, latest, last_event):
                self.cycles += 1
                SIGNAL_CYCLE.observe(time.perf_counter() - started)
            self._published = entry_id_key(last_event)
        await self._store.acknowledge([e.entry_id for e in events])


class SignalQueries:
    """``GET /v1/signals/...``: the latest values the worker published."""

    def __init__(self, store: SignalStore, symbols: frozenset[str]) -> None:
        self._store = store
        self._symbols = symbols

    async def latest(self) -> dict[str, Any]:
        return await self._store.latest()

    async def of_symbol(self, symbol: str) -> dict[str, Any]:
        if symbol not in self._symbols:
            raise SymbolNotFound(f"{symbol} is not traded here")
        latest = await self._store.latest(symbol)
        if not latest:
            raise SymbolNotFound(f"no signals for {symbol} yet")
        document: dict[str, Any] = latest[symbol]
        return document
