"""PlacementBatcher: a broker whose placements go in batches (throughput mode).

Placements are collected for up to ``max_wait_s`` or ``max_orders``, whichever comes first,
and sent as one request (``Broker.place_many``); each caller still gets its own answer. A
request that fails as a whole fails each of its orders with the same transport error a
single placement would have raised. A caller that stops waiting before its batch is sent
(its placement timeout) is left out of the batch, and a batch's request ends when its first
caller's timeout does: no order reaches the broker after its caller was told it is in
doubt, which is what reconciliation relies on. Everything else goes straight to the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from app.brokers.base import (
    Broker,
    BrokerTransportError,
    CancelAck,
    PlacementAck,
    PlacementResult,
    ReportBatch,
)
from app.domain.orders import Order
from app.domain.status import OrderStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Waiting:
    order: Order
    answer: asyncio.Future[PlacementAck]
    give_up_at: float  # the loop's clock: the caller's timeout (no request goes later)


class PlacementBatcher:
    def __init__(
        self, broker: Broker, *, max_orders: int, max_wait_s: float, timeout_s: float
    ) -> None:
        self._broker = broker
        self._max_orders = max_orders
        self._max_wait_s = max_wait_s
        self._timeout_s = timeout_s
        self._waiting: list[_Waiting] = []
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()

    async def place(self, order: Order) -> PlacementAck:
        """The broker's answer for ``order``, placed in the next batch. Its caller times
        out after ``timeout_s`` at the latest (the order path's own broker timeout)."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[PlacementAck] = loop.create_future()
        self._waiting.append(_Waiting(order, answer, loop.time() + self._timeout_s))
        if len(self._waiting) >= self._max_orders:
            self._send_waiting()
        elif self._timer is None:
            self._timer = loop.call_later(self._max_wait_s, self._send_waiting)
        return await answer

    async def place_many(self, orders: Sequence[Order]) -> list[PlacementResult]:
        return await self._broker.place_many(orders)

    def _send_waiting(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # A caller whose wait was canceled (its timeout) is not sent: nobody would learn
        # the answer, and its order is already being reconciled as never placed.
        batch = [waiting for waiting in self._waiting if not waiting.answer.done()]
        self._waiting = []
        if batch:
            task = asyncio.create_task(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Waiting]) -> None:
        # The request ends when its first caller gives up: no order reaches the broker
        # after its caller was told it is in doubt (reconciliation counts on that, as it
        # does for a single placement under the same timeout).
        results: list[PlacementResult | TimeoutError]
        try:
            async with asyncio.timeout_at(min(w.give_up_at for w in batch)):
                results = list(await self._broker.place_many([w.order for w in batch]))
        except TimeoutError:
            results = [TimeoutError("the batch's first order timed out") for _ in batch]
        except BrokerTransportError as exc:
            results = [BrokerTransportError(str(exc)) for _ in batch]
        except Exception as exc:
            log.exception("a batch of %d placements failed unexpectedly", len(batch))
            results = [BrokerTransportError(f"batch failed: {exc!r}") for _ in batch]
        for waiting, result in zip(batch, results, strict=True):
            if waiting.answer.done():  # the caller stopped waiting while the batch was out
                continue
            if isinstance(result, Exception):
                waiting.answer.set_exception(result)
            else:
                waiting.answer.set_result(result)

    # -- everything else goes straight to the broker --------------------------------------
    async def start(self) -> None:
        await self._broker.start()

    async def close(self) -> None:
        """Send what is waiting and wait for every batch out, each within its callers'
        timeout (the broker closes after)."""
        self._send_waiting()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._sending)

    async def ping(self) -> None:
        await self._broker.ping()

    async def cancel(self, order: Order) -> CancelAck:
        return await self._broker.cancel(order)

    async def cancel_many(self, orders: Sequence[Order]) -> list[CancelAck]:
        return await self._broker.cancel_many(orders)

    async def statuses(self, orders: Sequence[Order]) -> list[OrderStatus | None]:
        return await self._broker.statuses(orders)

    async def read_reports(self, cursor: str | None, *, block_ms: int, count: int) -> ReportBatch:
        return await self._broker.read_reports(cursor, block_ms=block_ms, count=count)

    async def housekeeping(self) -> None:
        await self._broker.housekeeping()
