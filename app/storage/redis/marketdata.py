"""Market data in Redis: the raw tick stream, the processor's state and each batch it
commits, the last bars, and the dead letters."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from app.domain.marketdata import Bar, DeadLetter, ProcessedBatch, RawTick, SymbolState, Tick
from app.redisio.multiplexed import MultiplexedRedis, pairs
from app.storage.redis.keys import LAST_TRADES, MarketDataKeys
from app.storage.redis.scripts import load_script

CURSOR_FIELD = b"@cursor"


@dataclass(slots=True)
class ProcessorState:
    cursor: str  # the last raw entry processed ('' none yet)
    symbols: dict[str, SymbolState] = field(default_factory=dict)


def bar_document(bar: Bar) -> dict[str, Any]:
    return {
        "symbol": bar.symbol,
        "start_us": bar.start_us,
        "open": format(bar.open, "f"),
        "high": format(bar.high, "f"),
        "low": format(bar.low, "f"),
        "close": format(bar.close, "f"),
        "volume": format(bar.volume, "f"),
        "trades": bar.trades,
    }


def bar_of(doc: dict[str, Any]) -> Bar:
    return Bar(
        doc["symbol"],
        int(doc["start_us"]),
        Decimal(doc["open"]),
        Decimal(doc["high"]),
        Decimal(doc["low"]),
        Decimal(doc["close"]),
        Decimal(doc["volume"]),
        int(doc["trades"]),
    )


def state_text(state: SymbolState) -> str:
    """A symbol's processor state as stored: [last tick time, bar start, open, high, low,
    close, volume, trades] (the bar's symbol is the field's name)."""
    bar = state.bar
    return orjson.dumps(
        [
            state.last_ts_us, bar.start_us, format(bar.open, "f"), format(bar.high, "f"),
            format(bar.low, "f"), format(bar.close, "f"), format(bar.volume, "f"), bar.trades,
        ]
    ).decode()  # fmt: skip


def state_of(symbol: str, text: bytes) -> SymbolState:
    ts, start, o, h, low, c, v, n = orjson.loads(text)
    return SymbolState(
        int(ts),
        Bar(
            symbol, int(start), Decimal(o), Decimal(h), Decimal(low), Decimal(c), Decimal(v), int(n)
        ),
    )


def tick_document(tick: Tick) -> list[Any]:
    return [tick.symbol, format(tick.price, "f"), format(tick.size, "f"), tick.ts_us]


def dead_document(dead: DeadLetter) -> dict[str, Any]:
    raw = dead.tick
    return {
        "symbol": raw.symbol,
        "price": raw.price,
        "size": raw.size,
        "ts_us": raw.ts_us,
        "reason": dead.reason.value,
        "detail": dead.detail,
    }


class MarketDataStore:
    def __init__(
        self,
        redis: MultiplexedRedis,
        *,
        raw_max_length: int,
        events_max_length: int,
        dead_max_length: int,
        bars_kept: int,
    ) -> None:
        self._redis = redis
        self._raw_max = raw_max_length
        self._events_max = events_max_length
        self._dead_max = dead_max_length
        self._bars_kept = bars_kept
        self._commit = load_script(redis, "app.storage.redis", "md_commit")

    # -- raw ticks ---------------------------------------------------------------------
    async def append_raw(self, ticks: Sequence[RawTick]) -> None:
        """A batch of ticks as it arrived (checked later, by the processor): one entry,
        so the processor reads a batch whole, never half of it."""
        if not ticks:
            return
        batch = orjson.dumps([[t.symbol, t.price, t.size, t.ts_us] for t in ticks])
        received = min(t.received_ns for t in ticks)
        await self._redis.execute(
            "XADD", MarketDataKeys.raw, "MAXLEN", "~", self._raw_max, "*",
            "ticks", batch, "received_ns", received,
        )  # fmt: skip

    async def read_raw(
        self, reader: MultiplexedRedis, after: str, count: int, block_ms: int
    ) -> list[tuple[str, RawTick]]:
        """The ticks of up to ``count`` batches after the entry ``after`` ('' from the
        start), each with its entry's id, waiting up to ``block_ms`` for one (``reader``:
        a client whose reply timeout outlasts it). A batch that does not parse is one
        tick of empty fields (a dead letter, malformed)."""
        reply = await reader.execute(
            "XREAD", "COUNT", count, "BLOCK", block_ms, "STREAMS", MarketDataKeys.raw,
            after or "0-0",
        )  # fmt: skip
        ticks: list[tuple[str, RawTick]] = []
        for _key, entries in reply or ():
            for entry_id, flat in entries:
                f = pairs(flat)
                entry = entry_id.decode()
                received = int(f.get(b"received_ns") or 0)
                try:
                    rows = orjson.loads(f.get(b"ticks", b""))
                    ticks += [
                        (entry, RawTick(str(s), str(p), str(q), str(t), received))
                        for s, p, q, t in rows
                    ]
                except (orjson.JSONDecodeError, TypeError, ValueError):
                    ticks.append((entry, RawTick("", "", "", "", received)))
        return ticks

    # -- the processor's state and commits ---------------------------------------------
    async def load_processor(self) -> ProcessorState:
        stored = pairs(await self._redis.execute("HGETALL", MarketDataKeys.processor))
        state = ProcessorState(stored.pop(CURSOR_FIELD, b"").decode())
        for symbol, value in stored.items():
            name = symbol.decode()
            state.symbols[name] = state_of(name, value)
        return state

    async def commit(self, expected_cursor: str, batch: ProcessedBatch) -> bool:
        """Commit the batch if the processor's cursor is still ``expected_cursor``; False
        if another processor moved it (the batch is then not written)."""
        states = [v for symbol, state in batch.changed.items() for v in (symbol, state_text(state))]
        last: dict[str, str] = {t.symbol: format(t.price, "f") for t in batch.ticks}
        completed = sorted(batch.completed, key=lambda bar: bar.start_us)  # by minute
        bars = [orjson.dumps(bar_document(b)).decode() for b in completed]
        last_bars = {b.symbol: text for b, text in zip(completed, bars, strict=True)}
        minutes: dict[int, int] = {}
        for bar in completed:
            minutes[bar.start_us] = minutes.get(bar.start_us, 0) + 1
        events: list[str] = []
        if batch.ticks or batch.completed:
            received = min(t.received_ns for t in batch.ticks) if batch.ticks else 0
            events = [
                "ticks", orjson.dumps([tick_document(t) for t in batch.ticks]).decode(),
                "bars", "[" + ",".join(bars) + "]",
                "received_ns", str(received),
            ]  # fmt: skip
        dead = [
            v for d in batch.dead for v in (d.reason.value, orjson.dumps(dead_document(d)).decode())
        ]
        keys = [
            MarketDataKeys.processor,
            LAST_TRADES,
            MarketDataKeys.events,
            MarketDataKeys.dead,
            MarketDataKeys.dead_counts,
            MarketDataKeys.last_bars,
            MarketDataKeys.bar_minutes,
            *(MarketDataKeys.bars(start) for start in minutes),
        ]
        args: list[str | int] = [
            expected_cursor, batch.cursor, self._events_max, self._dead_max,
            len(states) // 2, len(last), len(events) // 2, len(dead) // 2, len(last_bars),
            len(bars), len(minutes),
            *states,
            *(v for item in last.items() for v in item),
            *events,
            *dead,
            *(v for item in last_bars.items() for v in item),
            *(v for b, text in zip(completed, bars, strict=True) for v in (b.symbol, text)),
            *(v for item in minutes.items() for v in item),
        ]  # fmt: skip
        return bool(await self._commit(keys=keys, args=args))

    async def trim_bars(self) -> int:
        """Drop the minutes of bars beyond the newest ``bars_kept``; the minutes dropped."""
        old = await self._redis.execute(
            "ZRANGE", MarketDataKeys.bar_minutes, 0, -self._bars_kept - 1
        )
        if not old:
            return 0
        await self._redis.transaction(
            [
                ("DEL", *(MarketDataKeys.bars(int(start)) for start in old)),
                ("ZREM", MarketDataKeys.bar_minutes, *old),
            ]
        )
        return len(old)

    # -- reads -------------------------------------------------------------------------
    async def symbol_state(self, symbol: str) -> tuple[Decimal | None, SymbolState | None]:
        """The symbol's last trade price, and the processor's state of it (last tick, bar)."""
        price, state = await self._redis.execute_many(
            [("HGET", LAST_TRADES, symbol), ("HGET", MarketDataKeys.processor, symbol)]
        )
        symbol_state = None if state is None else state_of(symbol, state)
        return (Decimal(price.decode()) if price is not None else None), symbol_state

    async def backlog_age_s(self) -> float:
        """How long the oldest batch the processor has not taken yet has waited (0: none
        waits), by Redis's clock, which stamped the entry."""
        cursor, now = await self._redis.execute_many(
            [("HGET", MarketDataKeys.processor, CURSOR_FIELD), ("TIME",)]
        )
        after = b"(" + cursor if cursor else b"-"
        oldest = await self._redis.execute("XRANGE", MarketDataKeys.raw, after, "+", "COUNT", 1)
        if not oldest:
            return 0.0
        added_ms = int(oldest[0][0].split(b"-")[0])
        now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
        return max(0.0, (now_ms - added_ms) / 1000)

    async def newest_tick_us(self) -> int | None:
        """The newest good tick's time, over every symbol."""
        state = await self.load_processor()
        return max((s.last_ts_us for s in state.symbols.values()), default=None)

    async def last_bar(self, symbol: str) -> Bar | None:
        """The symbol's last completed bar."""
        text = await self._redis.execute("HGET", MarketDataKeys.last_bars, symbol)
        return None if text is None else bar_of(orjson.loads(text))

    async def recent_bars(self, minutes: int) -> list[Bar]:
        """Every completed bar of the newest ``minutes`` minutes that have any."""
        starts = await self._redis.execute("ZRANGE", MarketDataKeys.bar_minutes, -minutes, -1)
        if not starts:
            return []
        replies = await self._redis.execute_many(
            [("HVALS", MarketDataKeys.bars(int(start))) for start in starts]
        )
        return [bar_of(orjson.loads(text)) for texts in replies for text in texts]

    async def dead_letter_counts(self) -> dict[str, int]:
        counts = pairs(await self._redis.execute("HGETALL", MarketDataKeys.dead_counts))
        return {k.decode(): int(v) for k, v in counts.items()}

    async def dead_letters(self, count: int) -> list[dict[str, Any]]:
        """The newest ``count`` dead letters, newest first."""
        entries = await self._redis.execute(
            "XREVRANGE", MarketDataKeys.dead, "+", "-", "COUNT", count
        )
        return [orjson.loads(pairs(flat)[b"tick"]) for _id, flat in entries]
