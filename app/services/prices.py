"""Reference prices for the pre-trade checks: the last trade from market data when there is
one, else the configured reference price. Held in process and refreshed in the background,
so a risk decision never waits for a price."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from decimal import Decimal

from redis.exceptions import RedisError

from app.storage.redis.last_trades import LastTrades

log = logging.getLogger(__name__)


class ReferencePrices:
    def __init__(
        self,
        last_trades: LastTrades,
        configured: dict[str, Decimal],
        refresh_interval_s: float = 0.25,
    ) -> None:
        self._last_trades = last_trades
        self._configured = dict(configured)
        self._last: dict[str, Decimal] = {}
        self._interval_s = refresh_interval_s
        self._task: asyncio.Task[None] | None = None

    def get(self, symbol: str) -> Decimal | None:
        return self._last.get(symbol) or self._configured.get(symbol)

    async def record_last_trade(self, symbol: str, price: Decimal) -> None:
        await self._last_trades.record(symbol, price)
        self._last[symbol] = price

    async def refresh(self) -> None:
        self._last = await self._last_trades.all()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="reference-prices")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except RedisError as exc:
                log.debug("reference prices not refreshed: %r", exc)
            await asyncio.sleep(self._interval_s)
