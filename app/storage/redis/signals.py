"""The signal worker's Redis: its consumer group on ``md:events``, and what it publishes
(the ``signals`` stream and the latest values per symbol)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from redis.exceptions import ResponseError

from app.redisio.multiplexed import MultiplexedRedis, pairs
from app.storage.redis.keys import MarketDataKeys
from app.storage.redis.scripts import load_script

GROUP = "signals"
LAST_EVENT_FIELD = "@last_event"  # in the latest-values hash: the md:events entry behind them


@dataclass(frozen=True, slots=True)
class MarketEvents:
    """One ``md:events`` entry: a processed batch of ticks and the bars it completed."""

    entry_id: str
    ticks: list[list[Any]]  # [symbol, price, size, ts_us]
    bars: list[dict[str, Any]]
    received_ns: int


def entry_id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class SignalStore:
    def __init__(self, redis: MultiplexedRedis, signals_max_length: int = 10_000) -> None:
        self._redis = redis
        self._max = signals_max_length
        self._publish = load_script(redis, "app.storage.redis", "signals_publish")

    async def ensure_group(self) -> None:
        """The consumer group, reading ``md:events`` from its start if it is new."""
        try:
            await self._redis.execute(
                "XGROUP", "CREATE", MarketDataKeys.events, GROUP, "0", "MKSTREAM"
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read(
        self, reader: MultiplexedRedis, consumer: str, count: int, block_ms: int | None
    ) -> list[MarketEvents]:
        """``block_ms`` None: this consumer's pending entries (delivered before, never
        acknowledged: a restart); else new entries, waiting up to ``block_ms``."""
        if block_ms is None:
            command: list[Any] = ["XREADGROUP", "GROUP", GROUP, consumer, "COUNT", count]
            command += ["STREAMS", MarketDataKeys.events, "0"]
        else:
            command = ["XREADGROUP", "GROUP", GROUP, consumer, "COUNT", count]
            command += ["BLOCK", block_ms, "STREAMS", MarketDataKeys.events, ">"]
        reply = await reader.execute(*command)
        events: list[MarketEvents] = []
        for _key, entries in reply or ():
            for entry_id, flat in entries:
                if flat is None:  # trimmed away while pending
                    events.append(MarketEvents(entry_id.decode(), [], [], 0))
                    continue
                f = pairs(flat)
                events.append(
                    MarketEvents(
                        entry_id.decode(),
                        orjson.loads(f.get(b"ticks", b"[]")),
                        orjson.loads(f.get(b"bars", b"[]")),
                        int(f.get(b"received_ns", b"0")),
                    )
                )
        return events

    async def claim_abandoned(self, consumer: str, min_idle_ms: int) -> int:
        """Take over what other consumers (a worker that died) were given and never
        acknowledged; read next as this consumer's pending entries."""
        claimed = 0
        cursor = "0-0"
        while True:
            reply = await self._redis.execute(
                "XAUTOCLAIM", MarketDataKeys.events, GROUP, consumer, min_idle_ms, cursor,
                "COUNT", 1000, "JUSTID",
            )  # fmt: skip
            cursor = reply[0].decode()
            claimed += len(reply[1])
            if cursor == "0-0":
                return claimed

    async def acknowledge(self, entry_ids: list[str]) -> None:
        if entry_ids:
            await self._redis.execute("XACK", MarketDataKeys.events, GROUP, *entry_ids)

    async def last_published_event(self) -> str | None:
        value = await self._redis.execute("HGET", MarketDataKeys.signals_latest, LAST_EVENT_FIELD)
        return None if value is None else value.decode()

    async def publish(
        self, cycle: dict[str, Any], latest: dict[str, bytes], last_event: str
    ) -> bool:
        """One cycle: an entry on the ``signals`` stream and each symbol's latest values,
        at once, with the ``md:events`` entry they reach up to; False (nothing written) if
        the latest values already reach that far (another worker published it)."""
        fields = [v for item in latest.items() for v in item]
        published = await self._publish(
            keys=[MarketDataKeys.signals, MarketDataKeys.signals_latest],
            args=[last_event, self._max, orjson.dumps(cycle), *fields],
        )
        return bool(published)

    async def latest(self, symbol: str | None = None) -> dict[str, Any]:
        """Every symbol's latest values (or ``symbol``'s only: empty if it has none)."""
        if symbol is not None:
            value = await self._redis.execute("HGET", MarketDataKeys.signals_latest, symbol)
            return {} if value is None else {symbol: orjson.loads(value)}
        stored = pairs(await self._redis.execute("HGETALL", MarketDataKeys.signals_latest))
        return {
            k.decode(): orjson.loads(v) for k, v in stored.items() if k.decode() != LAST_EVENT_FIELD
        }
