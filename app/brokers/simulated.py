"""SimulatedBroker: a paper exchange whose book lives in Redis, shared by every worker.

Market orders fill at the symbol's reference price (configured until market data moves it),
limit orders rest until the reference price crosses them, at most ``top_of_book_qty`` per
match (so big orders fill in parts), IOC/FOK are honoured. Latency, business rejects,
timeouts and transport errors can be injected. Every event is an execution report on the
``{sim}:exec`` stream, which the gateway applies to its order log.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from redis import exceptions as redis_errors

from app.brokers.base import (
    BrokerTransportError,
    CancelAck,
    PlacementAck,
    PlacementResult,
    ReportBatch,
)
from app.config import SimulatedBrokerSettings
from app.domain.orders import QTY_DECIMALS, ExecutionReport, Order, Side
from app.domain.status import OrderStatus
from app.redisio.multiplexed import LuaScript, MultiplexedRedis, pairs
from app.storage.redis.keys import SimKeys
from app.storage.redis.scripts import load_script

_SCALE = Decimal(10) ** QTY_DECIMALS


# How stale a worker's copy of the run-time faults may be (PUT /v1/sim/broker reaches the
# other workers within this; fail_next is counted in Redis, exactly).
FAULTS_REFRESH_S = 0.2


@dataclass(frozen=True, slots=True)
class SimFaults:
    """What the paper exchange injects: configured at start, changeable at run time."""

    latency_ms: float
    latency_jitter_ms: float
    answer_delay_ms: float
    reject_rate: float
    fail_rate: float
    timeout_rate: float

    @classmethod
    def of(cls, settings: SimulatedBrokerSettings) -> SimFaults:
        return cls(
            settings.latency_ms,
            settings.latency_jitter_ms,
            settings.answer_delay_ms,
            settings.reject_rate,
            settings.fail_rate,
            settings.timeout_rate,
        )


@dataclass(frozen=True, slots=True)
class SimFaultState:
    faults: SimFaults
    fail_next: int  # placements still to fail
    placements: int  # orders whose placement reached the venue
    failed: int  # of which failed by fail_next
    place_requests: int  # placement requests that reached the venue (one per batch)
    cancel_requests: int  # cancel calls that reached the venue (one per batch)
    status_requests: int  # status queries that reached the venue (one per batch)


def _scaled(qty: Decimal) -> str:
    return str(int(qty * _SCALE))


def _unscaled(value: str | bytes) -> Decimal:
    return Decimal(int(value)) / _SCALE


class SimulatedBroker:
    def __init__(
        self,
        redis: MultiplexedRedis,
        reports_redis: MultiplexedRedis,
        settings: SimulatedBrokerSettings,
        reference_prices: dict[str, Decimal],
        rng: random.Random | None = None,
    ) -> None:
        self._redis = redis
        # The report stream is read with a blocking XREAD: a connection of its own.
        self._reports_redis = reports_redis
        self._settings = settings
        self._faults = SimFaults.of(settings)
        self._faults_read_at = -FAULTS_REFRESH_S
        self._reference_prices = reference_prices
        self._rng = rng or random.Random()
        self._top = _scaled(settings.top_of_book_qty)
        self._place, self._cancel, self._match, self._expire, self._move_prices = (
            load_script(redis, "app.brokers", name, preludes=("sim_common",))
            for name in ("sim_place", "sim_cancel", "sim_match", "sim_expire", "sim_move_prices")
        )

    async def start(self) -> None:
        await self._ensure_venue()

    async def _ensure_venue(self) -> None:
        # The epoch names this incarnation of the venue: a Redis that lost the exchange's
        # state restarts execution ids and stream positions, and the epoch tells them apart.
        await self._redis.transaction(
            [
                ("SET", SimKeys.epoch, secrets.token_hex(4), "NX"),
                *(
                    ("HSETNX", SimKeys.prices, symbol, format(price, "f"))
                    for symbol, price in self._reference_prices.items()
                ),
            ]
        )

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        if not await self._redis.execute("EXISTS", SimKeys.epoch):
            await self._ensure_venue()

    async def place(self, order: Order) -> PlacementAck:
        [result] = await self.place_many([order])
        if isinstance(result, BrokerTransportError):
            raise result
        return result

    async def place_many(self, orders: Sequence[Order]) -> list[PlacementResult]:
        """Place ``orders`` in one request to the venue (one script run); the injected
        latency, transport errors and hangs are the request's, rejects each order's."""
        faults = await self._current_faults()
        await self._network_delay(faults)
        fault = self._rng.random()
        if fault < faults.fail_rate:
            raise BrokerTransportError("injected transport error: order not sent")
        fault -= faults.fail_rate
        hang_after_placing = fault < faults.timeout_rate / 2
        hang_before_placing = not hang_after_placing and fault < faults.timeout_rate
        if hang_before_placing:
            await asyncio.Event().wait()  # lost on the way: the venue never sees it
        args = [self._top]
        for order in orders:
            reject = "broker.injected_reject" if self._rng.random() < faults.reject_rate else ""
            args += [
                order.account,
                order.client_order_id,
                order.symbol,
                order.side.value,
                _scaled(order.qty),
                "" if order.limit_price is None else format(order.limit_price, "f"),
                order.time_in_force.value,
                reject,
                self._configured_price(order.symbol),
            ]
        order_keys = (SimKeys.order(o.account, o.client_order_id) for o in orders)
        replies = await self._script(
            self._place, [SimKeys.fail_next, SimKeys.stats, *order_keys], args
        )
        if hang_after_placing:
            await asyncio.Event().wait()  # placed, but the acknowledgement is lost
        await self._network_delay(faults)  # the acknowledgement's way back
        if faults.answer_delay_ms > 0:
            await asyncio.sleep(faults.answer_delay_ms / 1000)
        return [_placement_result(reply) for reply in replies]

    async def cancel(self, order: Order) -> CancelAck:
        [ack] = await self.cancel_many([order])
        return ack

    async def cancel_many(self, orders: Sequence[Order]) -> list[CancelAck]:
        """Cancel ``orders`` in one call to the venue (one script run), answers in order."""
        faults = await self._current_faults()
        await self._network_delay(faults)
        if self._rng.random() < faults.fail_rate:
            raise BrokerTransportError("injected transport error: cancel not sent")
        replies = await self._script(
            self._cancel,
            [SimKeys.stats, *(SimKeys.order(o.account, o.client_order_id) for o in orders)],
            [],
        )
        await self._network_delay(faults)
        return [_cancel_ack(reply) for reply in replies]

    async def statuses(self, orders: Sequence[Order]) -> list[OrderStatus | None]:
        """One request to the venue (one pipelined round trip), counted as such."""
        _, *values = await self._redis.execute_many(
            [
                ("HINCRBY", SimKeys.stats, "status_requests", 1),
                *(("HGET", SimKeys.order(o.account, o.client_order_id), "status") for o in orders),
            ]
        )
        return [None if value is None else OrderStatus(_text(value)) for value in values]

    async def read_reports(self, cursor: str | None, *, block_ms: int, count: int) -> ReportBatch:
        epoch = await self._redis.execute("GET", SimKeys.epoch)
        epoch_text = _text(epoch) if epoch else ""
        position = "0-0"
        restarted = False
        if cursor:
            cursor_epoch, _, cursor_position = cursor.partition("/")
            if cursor_epoch == epoch_text:
                position = cursor_position
            else:
                restarted = True
        block = ("BLOCK", block_ms) if block_ms > 0 else ()  # BLOCK 0 would wait forever
        response: Any = await self._reports_redis.execute(
            "XREAD", "COUNT", count, *block, "STREAMS", SimKeys.reports, position
        )
        reports: list[ExecutionReport] = []
        for _stream, entries in response or []:
            for entry_id, fields in entries:
                reports.append(_report_from_fields(pairs(fields)))
                position = entry_id.decode()
        return ReportBatch(reports, f"{epoch_text}/{position}", restarted)

    async def housekeeping(self) -> None:
        await self.ping()  # a Redis that came back empty gets its venue (prices) again
        await self._match.many(
            ([], [symbol, self._top, self._configured_price(symbol)])
            for symbol in self._reference_prices
        )

    # -- paper-exchange controls (admin API and tests) --------------------------------
    async def set_reference_price(self, symbol: str, price: Decimal) -> int:
        await self._redis.execute("HSET", SimKeys.prices, symbol, format(price, "f"))
        matched: int = await self._script(
            self._match, [], [symbol, self._top, self._configured_price(symbol)]
        )
        return matched

    async def move_prices(self, prices: dict[str, Decimal]) -> int:
        """Market data's last trades, as the venue's prices: resting orders they cross
        fill. One script for them all."""
        if not prices:
            return 0
        pairs_ = [v for symbol, price in prices.items() for v in (symbol, format(price, "f"))]
        matched: int = await self._script(self._move_prices, [], [self._top, *pairs_])
        return matched

    async def close_session(self) -> int:
        expired: int = await self._script(self._expire, [], [])
        return expired

    async def set_faults(self, faults: SimFaults, fail_next: int) -> None:
        """Inject ``faults`` from now on, in every worker (within FAULTS_REFRESH_S), and
        fail the next ``fail_next`` placements with a transport error."""
        fields = [str(v) for pair in asdict(faults).items() for v in pair]
        await self._redis.transaction(
            [
                ("DEL", SimKeys.faults),
                ("HSET", SimKeys.faults, *fields),
                ("SET", SimKeys.fail_next, fail_next),
            ]
        )
        self._faults, self._faults_read_at = faults, time.monotonic()

    async def fault_state(self) -> SimFaultState:
        faults = await self._current_faults(fresh=True)
        fail_next, stats = await self._redis.execute_many(
            [("GET", SimKeys.fail_next), ("HGETALL", SimKeys.stats)]
        )
        counts = {k.decode(): int(v) for k, v in pairs(stats).items()}
        return SimFaultState(
            faults,
            int(fail_next or 0),
            counts.get("placements", 0),
            counts.get("failed", 0),
            counts.get("place_requests", 0),
            counts.get("cancel_requests", 0),
            counts.get("status_requests", 0),
        )

    async def _current_faults(self, *, fresh: bool = False) -> SimFaults:
        """The run-time faults, re-read from Redis at most every FAULTS_REFRESH_S (none
        set: the configured ones)."""
        now = time.monotonic()
        if fresh or now - self._faults_read_at >= FAULTS_REFRESH_S:
            self._faults_read_at = now
            try:
                stored = pairs(await self._redis.execute("HGETALL", SimKeys.faults))
            except (redis_errors.RedisError, OSError):
                if fresh:
                    raise
                return self._faults  # the venue's own Redis answers the placement itself
            configured = asdict(SimFaults.of(self._settings))
            chosen = {k.decode(): float(v) for k, v in stored.items()}
            self._faults = SimFaults(
                **{name: chosen.get(name, value) for name, value in configured.items()}
            )
        return self._faults

    def _configured_price(self, symbol: str) -> str:
        """What the venue's scripts fall back on when its Redis lost the symbol's price."""
        price = self._reference_prices.get(symbol)
        return "" if price is None else format(price, "f")

    async def _script(self, script: LuaScript, keys: list[str], args: list[str]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
            raise BrokerTransportError(str(exc)) from exc

    async def _network_delay(self, faults: SimFaults) -> None:
        """One way of a round trip: a request's to the venue, or its answer's back."""
        latency = faults.latency_ms
        if latency <= 0 and faults.latency_jitter_ms <= 0:
            return
        jitter = faults.latency_jitter_ms
        delay = max(0.0, latency + self._rng.uniform(-jitter, jitter))
        await asyncio.sleep(delay / 1000)


def _placement_result(reply: list[bytes]) -> PlacementResult:
    outcome = reply[0].decode()
    if outcome == "failed":
        return BrokerTransportError("injected transport error (fail_next): order not sent")
    if outcome == "rejected":
        return PlacementAck(accepted=False, reason=reply[1].decode())
    # 'duplicate': the venue already has this client_order_id (a retried placement).
    return PlacementAck(accepted=True)


def _cancel_ack(reply: list[bytes]) -> CancelAck:
    outcome = reply[0].decode()
    if outcome == "canceled":
        return CancelAck(True, OrderStatus.CANCELED, cum_qty=_unscaled(reply[1]))
    if outcome == "ended":  # too late: it ended before this cancel reached it
        return CancelAck(False, OrderStatus(reply[1].decode()), _unscaled(reply[2]))
    return CancelAck(False, None)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _report_from_fields(f: dict[bytes, bytes]) -> ExecutionReport:
    last_px = f.get(b"lp")
    reason = f.get(b"r")
    return ExecutionReport(
        client_order_id=f[b"c"].decode(),
        exec_id=f[b"x"].decode(),
        seq=int(f[b"q"]),
        status=OrderStatus(f[b"s"].decode()),
        cum_qty=_unscaled(f[b"cum"]),
        last_qty=_unscaled(f[b"lq"]),
        last_px=Decimal(last_px.decode()) if last_px else None,
        reason=reason.decode() if reason else None,
        account=f[b"a"].decode(),
        symbol=f[b"sym"].decode(),
        side=Side(f[b"side"].decode()),
        transact_time=datetime.fromtimestamp(int(f[b"t"]) / 1000, UTC),
    )
