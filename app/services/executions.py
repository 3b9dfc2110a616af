"""Applies the broker's execution reports to the order log, and reconciles lost placements.

One worker at a time (a Redis lease) reads the broker's report stream in order and applies
each batch in one transaction together with the stream cursor: nothing is lost on a crash,
and a report applied twice changes nothing (per-order sequence numbers, unique exec ids).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import NamedTuple

from app.brokers.base import Broker
from app.domain.broker_guard import Endpoint
from app.domain.exposure import Settlement
from app.domain.orders import ExecutionReport, Order, OrderReason
from app.domain.status import OrderStatus
from app.services.broker_guard import BrokerGuard
from app.storage.redis.lease import Lease
from app.storage.redis.risk_state import RiskStore
from app.storage.sql.order_log import OrderLog
from app.storage.sql.repositories import OrderRepository

log = logging.getLogger(__name__)

CURSOR_NAME = "broker-reports"
STOP_TIMEOUT_S = 2.0
# Reports per transaction. On SQLite the gateway's commits wait while the applier holds the
# write lock, so a batch is kept small enough not to stall them (docs/performance.md); a
# backlog is drained by going round again at once.
REPORT_BATCH = 128
# Orders asked about in one status query to the broker (one request, one `executions`
# token): a sweep of 10,000 live orders stays within Interactive Brokers' burst of 20.
STATUS_QUERY_BATCH = 1000


class LiveOrderCheck(NamedTuple):
    lost: int  # live orders the broker no longer knew, now ended
    unasked: int  # left for a later round: no pacing token was free for them


class ExecutionApplier:
    def __init__(
        self,
        *,
        broker: Broker,
        guard: BrokerGuard,
        order_log: OrderLog,
        orders: OrderRepository,
        lease: Lease,
        risk: RiskStore,
        reconcile_after_s: float,
        live_order_check_interval_s: float = 30.0,
        orphan_reservation_after_s: float = 10.0,
        housekeeping_interval_s: float = 0.25,
        commit_interval_s: float = 0.02,
    ) -> None:
        self._broker = broker
        self._guard = guard
        self._risk = risk
        self._orphan_after_ms = int(orphan_reservation_after_s * 1000)
        self._log = order_log
        self._orders = orders
        self._lease = lease
        self._reconcile_after = timedelta(seconds=reconcile_after_s)
        self._live_check_interval_s = live_order_check_interval_s
        self._housekeeping_interval_s = housekeeping_interval_s
        self._commit_interval_s = commit_interval_s
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.is_leader = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="execution-applier")

    async def close(self) -> None:
        """Stop between iterations rather than by cancelling: a cancel that lands inside a
        blocking Redis read was seen to be swallowed, leaving shutdown waiting forever."""
        if self._task is not None:
            self._stopping.set()
            done, _ = await asyncio.wait({self._task}, timeout=STOP_TIMEOUT_S)
            if not done:
                log.warning("execution applier did not stop in %.0f s; cancelling", STOP_TIMEOUT_S)
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=STOP_TIMEOUT_S)
            self._task = None
        if self.is_leader:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._lease.release(), STOP_TIMEOUT_S)

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when asked to stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _run(self) -> None:
        cursor: str | None = None
        next_renewal = next_housekeeping = next_reconcile = next_audit = next_live = 0.0
        while not self._stopping.is_set():
            try:
                now = time.monotonic()
                if now >= next_renewal:
                    was_leader, self.is_leader = self.is_leader, await self._lease.hold()
                    next_renewal = now + 1.0
                    if self.is_leader and not was_leader:
                        # Also after Redis or the database failed an iteration: what the
                        # venue held may have gone meanwhile, so ask it about live orders.
                        cursor = await self._orders.stream_cursor(CURSOR_NAME)
                        next_live = now
                        log.info("execution applier leading (holder %s)", self._lease.holder)
                if not self.is_leader:
                    await self._pause(0.5)
                    continue
                cursor, applied, restarted = await self.apply_once(cursor, block_ms=50)
                if restarted:
                    next_live = now  # the venue lost its state: which live orders with it?
                if 0 < applied < REPORT_BATCH:
                    # Let reports accumulate: fewer, larger transactions hold the database's
                    # write lock (SQLite: shared with the gateway's own commits) less often.
                    # A full batch means a backlog: no pause, and no longer hold either.
                    await self._pause(self._commit_interval_s)
                if now >= next_housekeeping:
                    await self._broker.housekeeping()
                    next_housekeeping = now + self._housekeeping_interval_s
                if now >= next_reconcile:
                    await self.reconcile()
                    next_reconcile = now + 1.0
                if now >= next_live:
                    check = await self.reconcile_live_orders()
                    # Some not asked (no token free): again soon, not a whole interval on.
                    next_live = now + (1.0 if check.unasked else self._live_check_interval_s)
                if now >= next_audit:
                    await self.release_orphan_reservations()
                    next_audit = now + 5.0
            except Exception:
                # Redis or the database is away: keep trying, the cursor makes it safe.
                log.exception("execution applier iteration failed; retrying")
                self.is_leader = False
                next_renewal = 0.0
                await self._pause(0.5)

    async def apply_once(
        self, cursor: str | None, *, block_ms: int
    ) -> tuple[str | None, int, bool]:
        """Apply the next batch of reports: the cursor after it, how many there were, and
        whether the venue's stream began anew since ``cursor``."""
        batch = await self._broker.read_reports(cursor, block_ms=block_ms, count=REPORT_BATCH)
        if not batch.reports:
            return batch.cursor, 0, batch.restarted
        # Risk first: settling is idempotent (cumulative quantities), so a crash before the
        # commit below re-applies it harmlessly, while the reverse order could lose it.
        if log.isEnabledFor(logging.DEBUG):
            for report in batch.reports:
                log.debug(
                    "applying report %s: %s, cumulative %s",
                    report.exec_id,
                    report.status.value,
                    report.cum_qty,
                    extra={"account": report.account, "client_order_id": report.client_order_id},
                )
        settlements = risk_settlements(batch.reports)
        if settlements:
            await self._risk.settle(settlements)
        await self._log.apply_reports(batch.reports, (CURSOR_NAME, batch.cursor))
        return batch.cursor, len(batch.reports), batch.restarted

    async def reconcile(self, *, wait: bool = False) -> int:
        """Resolve placements whose outcome we never learned. Never places again."""
        cutoff = datetime.now(UTC) - self._reconcile_after
        resolved = 0
        stale = await self._orders.stale_unresolved(cutoff)
        at_broker_now = await self._ask_broker(stale, wait=wait)
        for order, at_broker in zip(stale[: len(at_broker_now)], at_broker_now, strict=True):
            if order.status is OrderStatus.PENDING_CANCEL:
                if at_broker in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED):
                    # A cancel that never reached the broker: the order is still live there.
                    live = order.transition(at_broker, datetime.now(UTC))
                    resolved += await self._log.record_transition(
                        live, order.status, reason="cancel_not_received"
                    )
                elif at_broker is None:
                    resolved += await self._end_lost(order)
                continue
            if at_broker is not None:
                continue  # the broker has it: its reports (already streaming) settle it
            reason = OrderReason.NOT_RECEIVED
            rejected = order.transition(
                OrderStatus.REJECTED, datetime.now(UTC), reject_reason=reason
            )
            if await self._log.record_transition(rejected, order.status, reason=reason):
                await self._risk.release(order.account, order.client_order_id, Decimal(0))
                resolved += 1
                log.warning("order %s never reached the broker: rejected", order.id)
        return resolved

    async def reconcile_live_orders(self, *, wait: bool = False) -> LiveOrderCheck:
        """Ask the broker about every order the log holds live (acknowledged, not final):
        one it no longer knows was lost with the venue's state, and ends canceled. Run
        after Redis recovers, when the venue's stream began anew, and periodically."""
        live = await self._orders.live_orders()
        lost = 0
        at_broker = await self._ask_broker(live, wait=wait)
        for order, status in zip(live[: len(at_broker)], at_broker, strict=True):
            if status is None:
                lost += await self._end_lost(order)
        return LiveOrderCheck(lost=lost, unasked=len(live) - len(at_broker))

    async def _ask_broker(self, orders: list[Order], *, wait: bool) -> list[OrderStatus | None]:
        """The status at the broker of the first orders: one request per STATUS_QUERY_BATCH
        orders, each taking a token of the broker's `executions` bucket. Without ``wait``
        only tokens free now: the rest are asked in a later round (the loop applying the
        broker's reports must not stall); with it (an operator's reconcile), in turn."""
        statuses: list[OrderStatus | None] = []
        for start in range(0, len(orders), STATUS_QUERY_BATCH):
            if wait:
                await self._guard.pace_unrefused(Endpoint.EXECUTIONS)
            elif not await self._guard.token_now(Endpoint.EXECUTIONS):
                break
            statuses += await self._broker.statuses(orders[start : start + STATUS_QUERY_BATCH])
        return statuses

    async def _end_lost(self, order: Order) -> bool:
        """End an acknowledged order the broker no longer knows: canceled, with what the
        log holds filled (the venue's own record of it is gone), its reservation released."""
        lost = order.transition(OrderStatus.CANCELED, datetime.now(UTC))
        if not await self._log.record_transition(lost, order.status, reason=OrderReason.ORDER_LOST):
            return False  # it moved meanwhile (a report, a cancel): that settles it
        await self._risk.release(order.account, order.client_order_id, order.filled_qty)
        log.warning("order %s is unknown to the broker: canceled as lost", order.id)
        return True

    async def release_orphan_reservations(self) -> int:
        """Release reservations that no open order stands behind: the process died between
        reserving and writing the order, or missed a release. The database decides."""
        released = 0
        now_ms = int(time.time() * 1000)
        for account in await self._risk.accounts():
            snapshot = await self._risk.snapshot(account)
            old = [
                r.client_order_id
                for r in snapshot.reservations
                if now_ms - r.reserved_at_ms > self._orphan_after_ms
            ]
            if not old:
                continue
            progress = await self._orders.progress(account, old)
            for client_order_id in old:
                order = progress.get(client_order_id)
                if order is None or order.status.is_final:
                    # No order: it never reached the broker. Ended: what the log holds.
                    filled = Decimal(0) if order is None else order.filled_qty
                    await self._risk.release(account, client_order_id, filled)
                    log.warning("released orphan reservation %s/%s", account, client_order_id)
                    released += 1
        return released


def risk_settlements(reports: list[ExecutionReport]) -> list[Settlement]:
    """What the risk state needs to hear: fills and ends. A report of neither (the broker's
    'new', say) cannot change a reservation, so it costs Redis nothing."""
    return [
        Settlement(r.account, r.client_order_id, r.cum_qty, r.status.is_final, r.last_px)
        for r in reports
        if r.is_fill or r.status.is_final
    ]
