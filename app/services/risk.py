"""The pre-trade risk decision, made fresh for every order.

Cached are the *inputs* (limits in process, refreshed within a second and at once on a
pub/sub notice; reference prices), never results. The decision has two halves:
``check_static`` in process, then one Lua call that checks every stateful limit against live
exposure and reserves the order's exposure in the same atomic step. Redis unreachable means
no decision: ``RiskUnavailable`` (503), nothing reserved, the broker never called.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from decimal import Decimal
from typing import TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.domain.errors import RiskDenied, RiskUnavailable
from app.domain.exposure import AccountImage, Settlement
from app.domain.orders import OrderIntent
from app.domain.risk import (
    Reserved,
    RiskDecision,
    RiskLimits,
    check_static,
    duplicate_signature,
)
from app.services.cache import ReadThroughCache
from app.services.metrics import RISK_ACCEPTED, RISK_DECISIONS
from app.services.prices import ReferencePrices
from app.storage.redis.idempotency import KeyClaim
from app.storage.redis.keys import RiskKeys
from app.storage.redis.risk_state import ReserveResult, RiskStore
from app.storage.sql.repositories import OrderRepository
from app.storage.sql.risk_repository import RiskRepository

log = logging.getLogger(__name__)

T = TypeVar("T")
REBUILD_TIMEOUT_S = 5.0


class RiskService:
    def __init__(
        self,
        *,
        notices: Redis,
        store: RiskStore,
        risk_repo: RiskRepository,
        orders: OrderRepository,
        prices: ReferencePrices,
        default_limits: RiskLimits,
        limits_ttl_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._notices = notices  # pub/sub: limit changes made by other workers
        self._store = store
        self._repo = risk_repo
        self._orders = orders
        self.prices = prices
        self._default_limits = default_limits
        # One read (and at most one rebuild from the database) in flight per account,
        # however many orders need its limits at once.
        self._limits: ReadThroughCache[str, RiskLimits] = ReadThroughCache(
            self._read_limits, limits_ttl_s, clock=clock
        )
        self._rebuilding: dict[str, asyncio.Lock] = {}
        self._loaded: set[str] = set()  # accounts this process has loaded into Redis
        self._listener: asyncio.Task[None] | None = None

    # -- the decision --------------------------------------------------------------------
    async def reserve(
        self,
        account: str,
        client_order_id: str,
        intent: OrderIntent,
        claim: KeyClaim | None = None,
    ) -> RiskDecision:
        """Decide the order: accepted, its exposure reserved under ``client_order_id``
        (``Reserved.NOW``) unless that id already held a reservation (``Reserved.ALREADY``:
        nothing new was reserved); or denied, with the check's code. ``claim``: the order's
        idempotency key, claimed in the same Redis step as the checks (``KeyHeld`` if another
        request has it); the in-process checks come first, so a denial by them leaves it
        unclaimed. Raises ``RiskUnavailable`` when there is no decision (fail closed)."""
        try:
            decision = await self._decide(account, client_order_id, intent, claim)
        except RiskUnavailable as refusal:
            RISK_DECISIONS.labels(result=refusal.code).inc()
            raise
        if decision.denial is not None:
            RISK_DECISIONS.labels(result=decision.denial.code).inc()
        else:
            RISK_ACCEPTED.inc()
        return decision

    async def _decide(
        self, account: str, client_order_id: str, intent: OrderIntent, claim: KeyClaim | None
    ) -> RiskDecision:
        limits = await self.limits(account)
        reference = self.prices.get(intent.symbol)
        try:
            price = check_static(intent, limits, reference)
        except RiskDenied as static_denial:
            return RiskDecision(None, static_denial, key_claimed=False)
        duplicate = None
        if limits.duplicate_window_ms and not intent.allow_duplicate:
            duplicate = (duplicate_signature(intent), limits.duplicate_window_ms)
        for _ in range(2):
            outcome = await self._redis_call(
                self._store.reserve(
                    account,
                    client_order_id,
                    intent.symbol,
                    intent.side,
                    intent.qty,
                    reference or price,
                    duplicate,
                    claim,
                )
            )
            if outcome.kind is ReserveResult.NOSTATE:
                # Redis lost this account (restart, failover): rebuild from the database.
                await self.rebuild(account)
                continue
            if outcome.kind is ReserveResult.REJECT:
                denial = RiskDenied(outcome.code, outcome.detail)
                return RiskDecision(None, denial, outcome.key_claimed)
            if outcome.kind is ReserveResult.ABANDONED:  # only a call given up sees this
                raise RiskUnavailable("the reservation attempt was given up; nothing reserved")
            reserved = Reserved.NOW if outcome.kind is ReserveResult.OK else Reserved.ALREADY
            return RiskDecision(reserved, None, outcome.key_claimed)
        raise RiskUnavailable("risk state could not be rebuilt; order not accepted")

    async def release(self, account: str, client_order_id: str, cum_qty: Decimal) -> None:
        """An order ended with ``cum_qty`` filled, the broker's last word on it: that much
        is position, the rest of its reservation is given back."""
        await self._store.release(account, client_order_id, cum_qty)

    async def settle(self, settlements: Iterable[Settlement]) -> None:
        await self._store.settle(settlements)

    # -- limits, cached ------------------------------------------------------------------
    async def limits(self, account: str) -> RiskLimits:
        """The account's limits, never older than ``limits_ttl_s`` (re-read in the
        background while in use, and at once after a change notice)."""
        return await self._limits.get(account)

    async def _read_limits(self, account: str) -> RiskLimits:
        built, doc = await self._redis_call(self._store.limits_document(account))
        if not built or doc is None:
            await self.rebuild(account)
            built, doc = await self._redis_call(self._store.limits_document(account))
        return self._default_limits if doc is None else RiskLimits.model_validate_json(doc)

    def forget_limits(self, account: str) -> None:
        """A change notice: a read in flight began before the change, so orders from now
        on read afresh."""
        self._limits.forget(account)

    # -- rebuilding from the database ----------------------------------------------------
    async def image(self, account: str) -> AccountImage:
        """The account's risk state as the database knows it."""
        limits = await self._repo.limits(account) or self._default_limits
        kill_account, kill_global = await self._repo.kill_state(account)
        held = await self._orders.positions(account)
        positions = {p.symbol: p.qty for p in held}
        reservations = [
            (o.client_order_id, o.symbol, o.side, o.qty, o.filled_qty)
            for o in await self._orders.open_orders(account)
        ]
        symbols = set(positions) | {r[1] for r in reservations}
        # Mark: the reference price, else what the position cost (never 0: gross must count).
        marks = {p.symbol: p.avg_price for p in held if p.avg_price > 0}
        marks |= {s: p for s in symbols if (p := self.prices.get(s)) is not None}
        return AccountImage(limits, kill_account, kill_global, positions, marks, reservations)

    async def rebuild(self, account: str, *, replace: bool = False) -> bool:
        """Load the account's state into Redis from the database, unless it is there."""
        lock = self._rebuilding.setdefault(account, asyncio.Lock())
        try:
            async with lock, asyncio.timeout(REBUILD_TIMEOUT_S):
                image = await self.image(account)
                written = await self._store.load(account, image, replace=replace)
        except (RedisError, OSError, TimeoutError) as exc:
            raise RiskUnavailable(f"risk state could not be rebuilt: {exc!r}") from exc
        if written:
            # A process's first load of an account is routine (Redis may simply not have
            # held it yet); a later one means Redis lost state this process had seen.
            first = account not in self._loaded
            self._loaded.add(account)
            log.log(
                logging.INFO if first else logging.WARNING,
                "risk state of account %s %s from the database",
                account,
                "loaded" if first else "rebuilt",
            )
        return written

    # -- limit change notices ------------------------------------------------------------
    def start(self) -> None:
        self.prices.start()
        self._listener = asyncio.create_task(self._listen(), name="risk-limits-listener")

    async def close(self) -> None:
        await self.prices.close()
        self._limits.close()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener

    async def _listen(self) -> None:
        """Drop an account's cached limits as soon as another worker changes them. A missed
        notice costs at most ``limits_ttl_s`` of staleness."""
        while True:
            try:
                async with self._notices.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(RiskKeys.limits_channel)
                    # Notices sent while we were not listening are lost: forget everything.
                    self._limits.forget_all()
                    while True:
                        message = await pubsub.get_message(timeout=1.0)
                        if message is not None:
                            self.forget_limits(message["data"].decode())
            except (RedisError, OSError) as exc:
                log.debug("risk limits listener reconnecting: %r", exc)
                self._limits.forget_all()
                await asyncio.sleep(0.5)

    async def _redis_call(self, call: Awaitable[T]) -> T:
        """One Redis round trip of the decision: fail closed. The client bounds the wait
        (a reply later than ``risk.redis_timeout_ms`` drops the connection)."""
        try:
            return await call
        except (RedisError, OSError, TimeoutError) as exc:
            raise RiskUnavailable(f"risk state unreachable: {exc!r}") from exc
