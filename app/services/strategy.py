"""The strategy loop (off unless ``strategy.enabled``): signal cycles in, order intents out,
through the same ``OrderService.submit`` as every REST client (risk, pacing, breaker, order
log, execution stream), under the strategy's own account and API key.

It runs in a gateway process, one at a time (the lease ``strategy``). It waits on the
``signals`` stream and rebalances on the newest cycle at most every
``rebalance_interval_s``, and only when none of its orders is still open, so positions
read from the order log already hold every earlier fill. Each order's client_order_id
carries when the cycle's first tick reached the gateway (``s<ns>-<symbol>``), so the path
tick -> signal -> order -> fill can be timed by anyone who sees the order or its reports.
"""

from __future__ import annotations

import asyncio
import logging
import time
from decimal import Decimal
from pathlib import Path

import orjson

from app.config import StrategySettings
from app.domain.errors import GatewayError, NotAuthenticated
from app.domain.orders import OrderIntent, OrderType
from app.domain.status import OPEN_STATUSES
from app.domain.strategy import TargetWeights, Trade, rebalance, target_positions
from app.redisio.multiplexed import MultiplexedRedis, pairs
from app.services.auth import ApiKeyService, Principal, Role
from app.services.leased_loop import LeasedLoop
from app.services.metrics import STRATEGY_ORDERS, STRATEGY_TICK_TO_ACK
from app.services.orders import OrderService
from app.services.prices import ReferencePrices
from app.services.symbols import SymbolCatalog
from app.storage.redis.keys import MarketDataKeys
from app.storage.redis.lease import Lease

log = logging.getLogger(__name__)

RETRY_S = 1.0
BLOCK_MS = 1000
KEY_FILE = "strategy-api-key"


class StrategyLoop(LeasedLoop):
    name = "strategy"

    def __init__(
        self,
        *,
        orders: OrderService,
        keys: ApiKeyService,
        prices: ReferencePrices,
        symbols: SymbolCatalog,
        reader: MultiplexedRedis,
        lease: Lease,
        settings: StrategySettings,
        data_dir: Path,
    ) -> None:
        """``reader``: a client of its own for the blocking read."""
        super().__init__(lease)
        self._orders = orders
        self._keys = keys
        self._prices = prices
        self._symbols = symbols
        self._reader = reader
        self._settings = settings
        self._key_file = data_dir / KEY_FILE
        self._policy = TargetWeights(
            settings.gross_notional, settings.names_per_side, settings.min_trade_notional
        )
        self._cursor: str | None = None
        self._key: str | None = None
        self._next_rebalance = 0.0

    async def step(self) -> None:
        try:
            principal = await self._principal()
            cycle = await self._next_cycle()
            if cycle is not None and time.monotonic() >= self._next_rebalance:
                self._next_rebalance = time.monotonic() + self._settings.rebalance_interval_s
                await self.rebalance(principal, cycle)
        except GatewayError as exc:  # the order log or Redis refused: the next cycle
            log.warning("strategy: no rebalance now (%r)", exc)
            await asyncio.sleep(RETRY_S)

    def reset(self) -> None:
        self._cursor = None  # from the newest cycle again

    async def _principal(self) -> Principal:
        """The strategy's own key, kept in the data directory (issued on first use), read
        once and authenticated each step (a revoked key is replaced)."""
        if self._key is None and self._key_file.exists():
            self._key = self._key_file.read_text().strip()
        if self._key is not None:
            try:
                return await self._keys.authenticate(self._key)
            except NotAuthenticated:
                log.warning("strategy: its key was revoked; issuing a new one")
        _, key = await self._keys.create(self._settings.account, Role.TRADER)
        self._key = key
        self._key_file.parent.mkdir(parents=True, exist_ok=True)
        self._key_file.write_text(key + "\n")
        self._key_file.chmod(0o600)
        return await self._keys.authenticate(key)

    async def _next_cycle(self) -> dict[str, object] | None:
        """The newest signal cycle published since the last one seen (None: none came
        within the block). The first call starts from the newest cycle there is."""
        if self._cursor is None:
            newest = await self._reader.execute(
                "XREVRANGE", MarketDataKeys.signals, "+", "-", "COUNT", 1
            )
            self._cursor = newest[0][0].decode() if newest else "0-0"
        reply = await self._reader.execute(
            "XREAD", "COUNT", 100, "BLOCK", BLOCK_MS, "STREAMS", MarketDataKeys.signals,
            self._cursor,
        )  # fmt: skip
        if not reply:
            return None
        entries = reply[0][1]
        self._cursor = entries[-1][0].decode()
        cycle: dict[str, object] = orjson.loads(pairs(entries[-1][1])[b"cycle"])
        return cycle

    async def rebalance(self, principal: Principal, cycle: dict[str, object]) -> int:
        """Orders toward the cycle's targets; the orders sent."""
        account = principal.account
        open_orders, _ = await self._orders.list_orders(
            account, statuses=list(OPEN_STATUSES), symbol=None, cursor=None, limit=1
        )
        if open_orders:
            return 0  # their fills are not in the positions yet
        composite = cycle.get("composite")
        if not isinstance(composite, dict):
            return 0
        prices: dict[str, Decimal] = {}
        for symbol in composite:
            price = self._prices.get(symbol)
            if price is not None:
                prices[symbol] = price
        qty_places = min((self._symbols.get(s).qty_decimals for s in prices), default=0)
        targets = target_positions(self._policy, composite, prices, qty_places)
        held = {p.symbol: p.qty for p in await self._orders.positions(account)}
        trades = rebalance(self._policy, targets, held, prices)
        received_ns = int(str(cycle.get("received_ns") or 0))
        # All at once, as a client with several orders would send them.
        await asyncio.gather(*(self._send(account, trade, received_ns) for trade in trades))
        return len(trades)

    async def _send(self, account: str, trade: Trade, received_ns: int) -> None:
        intent = OrderIntent(
            symbol=trade.symbol,
            side=trade.side,
            qty=trade.qty,
            type=OrderType.MARKET,
            client_order_id=f"s{received_ns}-{trade.symbol}",
            allow_duplicate=True,
        )
        try:
            answer = await self._orders.submit(account, intent)
        except GatewayError as exc:  # refused (risk, pacing, breaker): the next cycle
            STRATEGY_ORDERS.labels(exc.code).inc()
            log.info("strategy: %s %s refused: %s", trade.side, trade.symbol, exc.detail)
            return
        STRATEGY_ORDERS.labels(str(answer.status)).inc()
        if answer.status == 201 and received_ns:
            STRATEGY_TICK_TO_ACK.observe((time.time_ns() - received_ns) / 1e9)
