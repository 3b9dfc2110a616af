"""The last trade price per symbol, in Redis: market data's reference prices (the paper
exchange's price moves until a feed exists), read by every worker."""

from __future__ import annotations

import contextlib
from decimal import Decimal, InvalidOperation

from app.redisio.multiplexed import MultiplexedRedis, pairs
from app.storage.redis.keys import LAST_TRADES


class LastTrades:
    def __init__(self, redis: MultiplexedRedis) -> None:
        self._redis = redis

    async def record(self, symbol: str, price: Decimal) -> None:
        await self._redis.execute("HSET", LAST_TRADES, symbol, format(price, "f"))

    async def all(self) -> dict[str, Decimal]:
        """Every symbol's last trade (a value that is not a decimal is left out)."""
        last: dict[str, Decimal] = {}
        for symbol, value in pairs(await self._redis.execute("HGETALL", LAST_TRADES)).items():
            with contextlib.suppress(InvalidOperation, UnicodeDecodeError):
                last[symbol.decode()] = Decimal(value.decode())
        return last
