"""Market data: ticks in (``MarketDataIngest``), checked and made into bars
(``TickProcessor``), and read back (``MarketDataQueries``).

The processor is one process at a time (the lease ``marketdata-processor``). It reads the
raw stream from its cursor, checks each tick against its symbol's state, folds good ticks
into 1-minute bars, and commits what it read in one script: the symbols' states with the
cursor after it, the last trades, one ``md:events`` entry, the completed bars and the dead
letters. The script commits only if the cursor is still where the batch began,
so a processor that lost its lease mid-batch cannot commit what its successor has: every
raw tick is used exactly once. Then the venue's prices move to the last trades (the paper
exchange fills resting orders they cross).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from app.domain.broker_guard import Endpoint
from app.domain.errors import RequestInvalid, SymbolNotFound
from app.domain.marketdata import Bar, DeadLetterReason, RawTick, process_batch
from app.redisio.multiplexed import MultiplexedRedis
from app.services.broker_guard import BrokerGuard
from app.services.leased_loop import LeasedLoop
from app.services.metrics import MARKETDATA_DEAD_LETTERS, MARKETDATA_TICKS
from app.storage.redis.lease import Lease
from app.storage.redis.marketdata import MarketDataStore, ProcessorState, bar_document

log = logging.getLogger(__name__)

TRIM_INTERVAL_S = 5.0  # old minutes of bars are dropped at most this often


class Venue(Protocol):
    async def move_prices(self, prices: dict[str, Decimal]) -> int: ...


class MarketDataIngest:
    """Ticks from outside (``POST /v1/marketdata/ticks``): each batch takes a token of the
    ``rt_marketdata`` bucket (beyond it: 429 with Retry-After, nothing taken in), then goes
    to the raw stream as it came, as one entry stamped with the time it arrived."""

    def __init__(self, store: MarketDataStore, guard: BrokerGuard, max_ahead_s: float) -> None:
        self._store = store
        self._guard = guard
        self._max_ahead_us = round(max_ahead_s * 1_000_000)

    async def take(self, ticks: Sequence[tuple[str, str, str, int]]) -> int:
        """``ticks``: (symbol, price, size, time in microseconds) each, checked later. A
        batch with a tick from before 1970 or from further ahead of this gateway's clock
        than ``max_ahead_s`` is refused whole (it would hold its symbol's later ticks back
        as going back in time)."""
        latest_us = time.time_ns() // 1000 + self._max_ahead_us
        for n, (_, _, _, ts_us) in enumerate(ticks):
            if not 0 <= ts_us <= latest_us:
                raise RequestInvalid(
                    f"ticks[{n}].time is before 1970 or ahead of this gateway's clock",
                    errors=[{"loc": ["body", "ticks", n, "time"], "msg": "out of range"}],
                )
        await self._guard.pace(Endpoint.RT_MARKETDATA)
        received_ns = time.time_ns()
        await self._store.append_raw(
            [RawTick(s, p, q, str(ts), received_ns) for s, p, q, ts in ticks]
        )
        return len(ticks)


class TickProcessor(LeasedLoop):
    name = "tick-processor"

    def __init__(
        self,
        store: MarketDataStore,
        reader: MultiplexedRedis,
        lease: Lease,
        price_decimals: Mapping[str, int],
        venue: Venue | None,
        *,
        batch_size: int = 1000,
        block_ms: int = 1000,
    ) -> None:
        """``reader``: a client of its own for the blocking read (its reply timeout longer
        than ``block_ms``)."""
        super().__init__(lease)
        self._store = store
        self._reader = reader
        self._known = dict(price_decimals)  # the traded symbols
        self._venue = venue
        self._batch_size = batch_size
        self._block_ms = block_ms
        self._state: ProcessorState | None = None  # None: to be read from Redis
        self.commits_lost = 0  # batches another processor committed first (a lapsed lease)
        self._next_trim = 0.0
        for reason in DeadLetterReason:  # every reason on /metrics from the start, at 0
            MARKETDATA_DEAD_LETTERS.labels(reason.value)

    async def step(self) -> None:
        await self.process_once()

    def reset(self) -> None:
        self._state = None  # another processor's commits may have moved it

    async def process_once(self, block_ms: int | None = None) -> int:
        """Read one batch of raw ticks, check and commit it; the ticks processed (0 when
        none came within the block, or another processor committed first)."""
        if self._state is None:
            self._state = await self._store.load_processor()
        state = self._state
        raws = await self._store.read_raw(
            self._reader,
            state.cursor,
            self._batch_size,
            self._block_ms if block_ms is None else block_ms,
        )
        if not raws:
            return 0
        batch = process_batch(state.symbols, raws, self._known)
        if not await self._store.commit(state.cursor, batch):
            log.warning("another tick processor committed first; reading its state")
            self.commits_lost += 1
            self._state = None
            return 0
        state.cursor = batch.cursor
        state.symbols.update(batch.changed)
        MARKETDATA_TICKS.inc(len(batch.ticks))
        for dead in batch.dead:
            MARKETDATA_DEAD_LETTERS.labels(dead.reason.value).inc()
        if self._venue is not None and batch.ticks:
            last = {t.symbol: t.price for t in batch.ticks}
            await self._venue.move_prices(last)
        if batch.completed and time.monotonic() >= self._next_trim:
            self._next_trim = time.monotonic() + TRIM_INTERVAL_S
            await self._store.trim_bars()
        return len(raws)


class MarketDataQueries:
    def __init__(self, store: MarketDataStore, symbols: frozenset[str]) -> None:
        self._store = store
        self._symbols = symbols

    async def symbol_view(self, symbol: str) -> dict[str, Any]:
        """``GET /v1/marketdata/{symbol}``: last trade, forming bar, last completed bar."""
        if symbol not in self._symbols:
            raise SymbolNotFound(f"{symbol} is not traded here")
        price, state = await self._store.symbol_state(symbol)
        previous = await self._store.last_bar(symbol)
        return {
            "symbol": symbol,
            "last_price": None if price is None else format(price, "f"),
            "last_trade_at": None if state is None else _iso(state.last_ts_us),
            "bar": None if state is None else _bar_view(state.bar),
            "previous_bar": None if previous is None else _bar_view(previous),
        }

    async def dead_letters(self, limit: int) -> tuple[dict[str, int], list[dict[str, Any]]]:
        """Dead letters counted by reason, and the newest ``limit`` of them."""
        return await self._store.dead_letter_counts(), await self._store.dead_letters(limit)


def _iso(ts_us: int) -> str:
    return datetime.fromtimestamp(ts_us / 1_000_000, UTC).isoformat().replace("+00:00", "Z")


def _bar_view(bar: Bar) -> dict[str, Any]:
    view = bar_document(bar)
    del view["symbol"], view["start_us"]
    return {"start": _iso(bar.start_us), **view}
