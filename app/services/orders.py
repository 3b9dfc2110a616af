"""The order path, top to bottom, in ``OrderService.submit``.

identify -> pre-trade risk (static checks in process, then one atomic Redis step that claims
the idempotency key and reserves the exposure; fails closed) -> broker guard (circuit
breaker, then a pacing token, waited for if need be) -> write-ahead (pending_new, durable)
-> broker.place under a timeout -> record the outcome (durable) -> remember the answer.

The order is durable *before* the broker sees it, so a crash at any point leaves a row that
reconciliation resolves by asking the broker, never by placing again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from redis.exceptions import RedisError

from app.brokers.base import Broker, BrokerTransportError, CancelAck
from app.domain.broker_guard import Endpoint
from app.domain.errors import (
    BrokerCircuitOpen,
    BrokerRejected,
    BrokerTimeout,
    BrokerUnavailable,
    GatewayError,
    IdempotencyConflict,
    IdempotencyInFlight,
    InvalidOrder,
    OrderNotCancelable,
    OrderNotFound,
    PacingRateLimited,
    RiskUnavailable,
    StorageUnavailable,
)
from app.domain.ids import new_id
from app.domain.instruments import check_precision
from app.domain.orders import Order, OrderIntent, OrderReason, Position
from app.domain.risk import Reserved
from app.domain.status import OrderStatus
from app.domain.views import render_order, render_problem
from app.logs import CLIENT_ORDER_ID, ORDER_ID
from app.services.broker_guard import BrokerGuard
from app.services.metrics import ERRORS, ORDERS_IN_FLIGHT
from app.services.order_timing import OrderTimer, Outcome, Stage
from app.services.risk import RiskService
from app.services.symbols import SymbolCatalog
from app.storage.redis.broker_guard import Admitted
from app.storage.redis.idempotency import Answer, IdempotencyStore, KeyClaim, KeyHeld
from app.storage.sql.order_log import OrderLog
from app.storage.sql.repositories import OrderRepository

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class AccountSummary:
    account: str
    open_orders: int
    positions: int
    gross_position_cost: Decimal


class OrderService:
    def __init__(
        self,
        *,
        order_log: OrderLog,
        orders: OrderRepository,
        idempotency: IdempotencyStore,
        broker: Broker,
        guard: BrokerGuard,
        risk: RiskService,
        symbols: SymbolCatalog,
        broker_timeout_s: float,
        mass_cancel_batch: int = 500,
    ) -> None:
        self._risk = risk
        self._mass_cancel_batch = mass_cancel_batch
        self._guard = guard
        self._log = order_log
        self._orders = orders
        self._idempotency = idempotency
        self._broker = broker
        self._symbols = symbols
        self._broker_timeout_s = broker_timeout_s

    # -- placing -------------------------------------------------------------------------
    async def submit(
        self,
        account: str,
        intent: OrderIntent,
        idempotency_key: str | None = None,
        timer: OrderTimer | None = None,
    ) -> Answer:
        """Place one order intent for ``account``; returns the answer to send (and keep).
        ``timer``: the request's, already lapped through its authentication."""
        timer = timer or OrderTimer()
        ORDERS_IN_FLIGHT.inc()
        try:
            return await self._submit(account, intent, idempotency_key, timer)
        finally:
            ORDERS_IN_FLIGHT.dec()
            timer.record()

    async def _submit(
        self, account: str, intent: OrderIntent, idempotency_key: str | None, timer: OrderTimer
    ) -> Answer:
        client_order_id = _client_order_id(intent, idempotency_key)
        check_precision(intent, self._symbols.get(intent.symbol))
        fingerprint = intent.fingerprint()
        if client_order_id is None:
            # No key from the client: nothing can retry this order, so no claim to make.
            return await self._place(account, new_id(), intent, fingerprint, timer)

        # The key is claimed by the order's first Redis step: the risk reservation, or the
        # claim alone when the in-process checks refuse the order first.
        claim = self._idempotency.claim_for(account, client_order_id, fingerprint)
        try:
            answer = await self._place(account, client_order_id, intent, fingerprint, timer, claim)
        except KeyHeld as held:
            ORDER_ID.set(None)  # no order was made: the answer is an earlier request's
            answer = await self._answer_for_held_key(account, client_order_id, fingerprint, held)
            timer.outcome = Outcome.REPLAYED
            return answer
        except GatewayError:
            # Nothing was written and the claim, if made, let go (a claim whose outcome is
            # unknown, Redis having failed, expires instead).
            raise
        except BaseException:
            # Unexpected: keep the in-flight claim (it expires) rather than risk a duplicate.
            log.exception("order %s/%s failed unexpectedly", account, client_order_id)
            raise
        self._idempotency.remember(account, client_order_id, fingerprint, answer)
        return answer

    async def _answer_for_held_key(
        self, account: str, client_order_id: str, fingerprint: str, held: KeyHeld
    ) -> Answer:
        """Another request has this key: its answer, or why there is none to give yet."""
        if held.claim.fingerprint != fingerprint:
            raise IdempotencyConflict(
                f"client_order_id {client_order_id!r} was used for a different order"
            )
        if held.claim.answer is not None:
            return held.claim.answer
        # In flight per Redis; but the first attempt may have answered a moment ago (its
        # answer reaches Redis just after the client), so ask the order log.
        return await self._answer_from_database(
            account, client_order_id, fingerprint, answered_only=True
        )

    async def _place(
        self,
        account: str,
        client_order_id: str,
        intent: OrderIntent,
        fingerprint: str,
        timer: OrderTimer,
        claim: KeyClaim | None = None,
    ) -> Answer:
        now = utcnow()
        order = Order(
            id=new_id(),
            client_order_id=client_order_id,
            account=account,
            symbol=intent.symbol,
            side=intent.side,
            qty=intent.qty,
            type=intent.type,
            limit_price=intent.limit_price,
            time_in_force=intent.time_in_force,
            status=OrderStatus.PENDING_NEW,
            created_at=now,
            updated_at=now,
            request_hash=fingerprint,
        )
        ORDER_ID.set(order.id)  # on every log line of this order's request from here on
        CLIENT_ORDER_ID.set(client_order_id)
        # Pre-trade risk: decided fresh against live exposure; reserves it when accepted.
        decision = await self._risk.reserve(account, client_order_id, intent, claim)
        timer.lap(Stage.RISK)
        claimed = claim if decision.key_claimed else None  # this request holds its key
        if decision.denial is not None:
            if claim is not None and claimed is None:
                # Refused in process, before Redis: the denial is an answer to keep, so
                # claim the key now (a retry of an earlier, accepted order may hold it).
                await self._claim(claim)
                claimed = claim
            return await self._or_let_go(self._deny(order, decision.denial, timer), claimed)

        # The broker's protection: an open circuit breaker, or no pacing token within the
        # wait, refuses the order before it is written; stored as denied, with that code.
        try:
            admitted = await self._guard.admit(Endpoint.ORDER_PLACEMENT)
        except (BrokerCircuitOpen, PacingRateLimited) as refusal:
            timer.lap_guard(0.0)
            if decision.reserved is Reserved.NOW:
                await self._release(order, filled=Decimal(0))
            return await self._or_let_go(self._deny(order, refusal, timer), claimed)
        timer.lap_guard(admitted.wait_s)

        # Write-ahead: the order is durable before the broker can act on it.
        try:
            inserted = await self._log.insert_new(order)
            timer.lap(Stage.PERSIST)
        except StorageUnavailable:
            # Nothing reached the broker: give back what was reserved, and the key (a
            # write in doubt that did commit is resolved by reconciliation as never sent).
            await self._guard.unused(admitted)
            if decision.reserved is Reserved.NOW:
                await self._release(order, filled=Decimal(0))
            await self._let_go(claimed)
            raise
        if not inserted:
            # The id is taken in the order log (Redis had forgotten the key).
            await self._guard.unused(admitted)
            if decision.reserved is Reserved.NOW:  # undo what was just reserved
                await self._release(order, filled=Decimal(0))
            answer = await self._or_let_go(
                self._answer_from_database(account, client_order_id, fingerprint), claimed
            )
            timer.outcome = Outcome.REPLAYED
            return answer

        try:
            async with asyncio.timeout(self._broker_timeout_s):
                ack = await self._broker.place(order)
        except (TimeoutError, BrokerTransportError) as exc:
            timer.lap(Stage.BROKER)
            await self._guard.failed(admitted)
            # The broker may or may not hold the order: say so, and let reconciliation ask.
            error: GatewayError = (
                BrokerTimeout(f"no answer from the broker within {self._broker_timeout_s}s")
                if isinstance(exc, TimeoutError)
                else BrokerUnavailable(f"broker transport error: {exc}")
            )
            # The reservation stays until the broker's answer is known.
            log.warning("order in doubt, left to reconciliation: %s", error.detail)
            unknown = order.transition(OrderStatus.UNKNOWN, utcnow())
            answer = _problem(error, unknown)
            await self._record(unknown, OrderStatus.PENDING_NEW, answer, reason=error.code)
            timer.lap(Stage.PERSIST)
            timer.outcome = Outcome.UNKNOWN
            return answer
        timer.lap(Stage.BROKER)

        # The broker answered (a business reject is an answer too): the breaker counts it
        # while the outcome commits.
        if ack.accepted:
            placed = order.transition(OrderStatus.NEW, utcnow())
            answer = Answer(201, render_order(placed))
            await asyncio.gather(
                self._guard.succeeded(admitted),
                self._record(placed, OrderStatus.PENDING_NEW, answer),
            )
            timer.lap(Stage.PERSIST)
            timer.outcome = Outcome.ACCEPTED
            log.debug("order accepted: %s %s %s", order.side.value, order.qty, order.symbol)
            return answer
        reason = ack.reason or "broker.rejected"
        log.info("order rejected by the broker: %s", reason)
        rejected = order.transition(OrderStatus.REJECTED, utcnow(), reject_reason=reason)
        answer = _problem(
            BrokerRejected(f"the broker rejected the order: {reason}", reason=reason), rejected
        )
        await asyncio.gather(
            self._guard.succeeded(admitted),
            self._record(rejected, OrderStatus.PENDING_NEW, answer, reason=reason),
        )
        timer.lap(Stage.PERSIST)
        timer.outcome = Outcome.REJECTED
        await self._release(rejected, filled=Decimal(0))  # a rejected order never traded
        return answer

    async def _or_let_go(self, answer: Awaitable[Answer], claimed: KeyClaim | None) -> Answer:
        """``answer``; if it raises instead, nothing was written, so the key this request
        claimed is let go first, for a retry (if Redis fails now, the claim expires)."""
        try:
            return await answer
        except GatewayError:
            await self._let_go(claimed)
            raise

    async def _let_go(self, claimed: KeyClaim | None) -> None:
        """Let go of the key this request claimed (if Redis fails now, the claim expires)."""
        if claimed is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._idempotency.release(claimed)

    async def _claim(self, claim: KeyClaim) -> None:
        try:
            await self._idempotency.claim(claim)
        except (RedisError, OSError) as exc:
            # Redis holds the risk state too: without it no order can be decided.
            raise RiskUnavailable(f"Redis unreachable: {exc!r}") from exc

    async def _deny(self, order: Order, denial: GatewayError, timer: OrderTimer) -> Answer:
        """Store an order the gateway refused (a risk check, the broker guard) as denied,
        with the refusal's code as its reason."""
        log.info("order denied: %s", denial.code)
        denied = order.transition(OrderStatus.DENIED, utcnow(), reject_reason=denial.code)
        answer = _problem(denial, denied)
        # One write: the order, its denial and the answer, in one transaction.
        inserted = await self._log.insert_new(
            order, outcome=denied, reason=denial.code, ack=(answer.status, answer.body)
        )
        timer.lap(Stage.PERSIST)
        if not inserted:
            answer = await self._answer_from_database(
                order.account, order.client_order_id, order.request_hash
            )
            timer.outcome = Outcome.REPLAYED
            return answer
        timer.outcome = Outcome.DENIED
        return answer

    async def _release(self, order: Order, *, filled: Decimal) -> None:
        """Settle an ended order's reservation now, ``filled`` being the broker's final
        cumulative fill. Best effort: the broker's final report does the same
        (idempotently) through the execution applier."""
        try:
            await self._risk.release(order.account, order.client_order_id, filled)
        except (RedisError, OSError) as exc:
            log.warning("reservation of %s not released now: %r", order.id, exc)

    async def _record(
        self, order: Order, previous: OrderStatus, answer: Answer, reason: str | None = None
    ) -> None:
        # If the broker's own report got there first (e.g. a fill), the transition is not
        # applied: the report holds the truth. The answer is kept either way, for replays.
        try:
            await self._log.record_transition(
                order, previous, reason=reason, ack=(answer.status, answer.body)
            )
        except StorageUnavailable as exc:
            # The broker has answered: the order is not "not done". Its outcome reaches the
            # order log from the broker's reports, or from reconciliation.
            raise StorageUnavailable(
                f"the broker answered for order {order.id} ({order.status.value}), but the "
                "order log did not record it; it will from the broker's reports",
                order_id=order.id,
                order_status=order.status.value,
            ) from exc

    async def _answer_from_database(
        self, account: str, client_order_id: str, fingerprint: str, *, answered_only: bool = False
    ) -> Answer:
        """The answer as the order log holds it: Redis forgot the key, or the answer has
        not reached Redis yet. ``answered_only``: never answer from the current state."""
        stored = await self._orders.get_ack(account, client_order_id)
        if stored is None:
            raise IdempotencyInFlight(f"order {client_order_id!r} is still being placed")
        if stored.order.request_hash != fingerprint:
            raise IdempotencyConflict(
                f"client_order_id {client_order_id!r} was used for a different order"
            )
        if stored.ack_status is not None and stored.ack_body is not None:
            return Answer(stored.ack_status, stored.ack_body, replayed=True)
        if answered_only or stored.order.status is OrderStatus.PENDING_NEW:
            raise IdempotencyInFlight(f"order {client_order_id!r} is still being placed")
        # The first attempt died before answering; the order has since been resolved.
        return Answer(200, render_order(stored.order), replayed=True)

    # -- reading -------------------------------------------------------------------------
    async def get(self, account: str, order_id: str) -> Order:
        order = await self._orders.get(account, order_id)
        if order is None:
            raise OrderNotFound(f"no order {order_id!r}")
        return order

    async def list_orders(
        self,
        account: str,
        *,
        statuses: list[OrderStatus] | None,
        symbol: str | None,
        cursor: str | None,
        limit: int,
    ) -> tuple[list[Order], str | None]:
        page = await self._orders.list_orders(
            account, statuses=statuses, symbol=symbol, before_id=cursor, limit=limit + 1
        )
        next_cursor = page[limit - 1].id if len(page) > limit else None
        return page[:limit], next_cursor

    async def positions(self, account: str) -> list[Position]:
        return await self._orders.positions(account)

    async def account_summary(self, account: str) -> AccountSummary:
        positions = await self._orders.positions(account)
        return AccountSummary(
            account=account,
            open_orders=await self._orders.count_open(account),
            positions=sum(1 for p in positions if p.qty != 0),
            gross_position_cost=sum((abs(p.qty) * p.avg_price for p in positions), Decimal(0)),
        )

    # -- canceling -----------------------------------------------------------------------
    async def cancel(self, account: str, order_id: str) -> Order:
        """Cancel one open order; answers the order as it stands afterwards. The cancel
        passes the broker guard (nothing changes if it refuses)."""
        return await self._cancel(account, order_id, guarded=True)

    async def _cancel(self, account: str, order_id: str, *, guarded: bool) -> Order:
        ORDER_ID.set(order_id)
        order = await self.get(account, order_id)
        CLIENT_ORDER_ID.set(order.client_order_id)
        admitted: Admitted | None = None
        paced = called = False
        try:
            for _ in range(3):  # a concurrent fill may move the order under us; re-read
                if order.status.is_final:
                    raise OrderNotCancelable(
                        f"order is already {order.status.value}", order_status=order.status.value
                    )
                if order.status is OrderStatus.PENDING_CANCEL:
                    return order
                if order.status in (OrderStatus.PENDING_NEW, OrderStatus.UNKNOWN):
                    raise OrderNotCancelable(
                        "the placement's outcome is not known yet; retry shortly",
                        order_status=order.status.value,
                    )
                if not paced:  # before pending_cancel is committed (see cancel_all)
                    admitted = await self._leave_to_cancel(order, guarded=guarded)
                    paced = True
                pending = order.transition(OrderStatus.PENDING_CANCEL, utcnow())
                if await self._log.record_transition(pending, order.status, reason="client"):
                    called = True
                    return await self._cancel_at_broker(order, pending, admitted)
                order = await self.get(order.account, order.id)
            raise OrderNotCancelable("order kept changing; retry", order_status=order.status.value)
        finally:
            if admitted is not None and not called:
                await self._guard.unused(admitted)  # no cancel was sent after all

    async def _leave_to_cancel(self, order: Order, *, guarded: bool) -> Admitted | None:
        """The broker guard's leave for a cancel: a refusal names the order, unchanged. A
        kill switch's cancel (not ``guarded``) waits its turn for a token, never refused."""
        if not guarded:
            await self._guard.pace_unrefused(Endpoint.ORDER_PLACEMENT)
            return None
        try:
            return await self._guard.admit(Endpoint.ORDER_PLACEMENT)
        except (BrokerCircuitOpen, PacingRateLimited) as refusal:
            refusal.extra.update(order_id=order.id, order_status=order.status.value)
            raise

    async def _cancel_at_broker(
        self, before: Order, pending: Order, admitted: Admitted | None
    ) -> Order:
        try:
            async with asyncio.timeout(self._broker_timeout_s):
                ack = await self._broker.cancel(pending)
        except (TimeoutError, BrokerTransportError) as exc:
            if admitted is not None:
                await self._guard.failed(admitted)
            # Stays pending_cancel: the broker's report (or reconciliation) settles it.
            error = (
                BrokerTimeout(f"cancel not confirmed within {self._broker_timeout_s}s")
                if isinstance(exc, TimeoutError)
                else BrokerUnavailable(f"cancel not sent: broker transport error: {exc}")
            )
            error.extra.update(order_id=pending.id, order_status=pending.status.value)
            raise error from exc
        if admitted is not None:
            await self._guard.succeeded(admitted)
        await self._after_cancel(before, pending, ack)
        return await self.get(pending.account, pending.id)

    async def _after_cancel(self, before: Order, pending: Order, ack: CancelAck) -> Order:
        """Record what the broker said of a cancel; the order as it now stands."""
        if ack.canceled:
            log.info("order canceled", extra={"order_id": pending.id})
            canceled = pending.transition(OrderStatus.CANCELED, utcnow())
            await self._log.record_transition(canceled, OrderStatus.PENDING_CANCEL, reason="client")
            if ack.cum_qty is not None:
                # With what the broker had filled: fills whose reports are still on their
                # way become position now, so they cannot be lost when they arrive.
                await self._release(canceled, filled=ack.cum_qty)
            return canceled
        if ack.broker_status is None:
            # The broker no longer knows an order it acknowledged: lost with the venue's
            # state. It trades no more, so the cancel is done; what it filled, the log holds.
            lost = pending.transition(OrderStatus.CANCELED, utcnow())
            reason = OrderReason.ORDER_LOST
            await self._log.record_transition(lost, OrderStatus.PENDING_CANCEL, reason=reason)
            await self._release(lost, filled=pending.filled_qty)
            return lost
        # Too late: the broker already finished it. Undo our pending_cancel; its reports
        # bring the fills.
        restored = pending.transition(before.status, utcnow())
        await self._log.record_transition(
            restored, OrderStatus.PENDING_CANCEL, reason="cancel_rejected"
        )
        broker_status = ack.broker_status.value
        raise OrderNotCancelable(
            f"the broker reports the order {broker_status}", order_status=broker_status
        )

    async def cancel_all(self, account: str, only: Collection[str] | None = None) -> list[Order]:
        """Cancel every open order of the account (``only``: those of these client order
        ids); answers those now canceled or canceling.

        A mass cancel (a kill switch's too), in batches of ``mass_cancel_batch``: a batch's
        pending_cancels committed together, the broker asked in one request, the outcomes
        committed together. Each request waits its turn for a pacing token, but neither the
        breaker nor the pacing wait refuses it: a kill switch must not be refused."""
        candidates = [
            o
            for o in await self._orders.open_orders(account)
            if o.status in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)
            and (only is None or o.client_order_id in only)
        ]
        done: list[Order] = []
        moved_meanwhile: list[Order] = []  # a fill, say: asked again, one by one, after
        batch = self._mass_cancel_batch
        for start in range(0, len(candidates), batch):
            chunk = candidates[start : start + batch]
            # The token first: orders left pending_cancel while it is awaited would look to
            # reconciliation like a cancel the broker never received.
            await self._guard.pace_unrefused(Endpoint.ORDER_PLACEMENT)
            marked, moved = await self._mark_pending_cancel(chunk)
            moved_meanwhile += moved
            if marked:
                done += await self._cancel_batch(marked)
        again = await asyncio.gather(
            *(self._cancel(account, o.id, guarded=False) for o in moved_meanwhile),
            return_exceptions=True,
        )
        for order, result in zip(moved_meanwhile, again, strict=True):
            if isinstance(result, Order):
                done.append(result)
            else:
                _skip_or_raise(order, result)
        return done

    async def _mark_pending_cancel(
        self, orders: list[Order]
    ) -> tuple[list[tuple[Order, Order]], list[Order]]:
        """Commit every order's pending_cancel together: (before, pending_cancel) of those
        moved, and those that had moved meanwhile."""
        now = utcnow()
        pendings = [o.transition(OrderStatus.PENDING_CANCEL, now) for o in orders]
        moves = await asyncio.gather(
            *(
                self._log.record_transition(p, o.status, reason="client")
                for o, p in zip(orders, pendings, strict=True)
            ),
            return_exceptions=True,
        )
        marked: list[tuple[Order, Order]] = []
        moved_meanwhile: list[Order] = []
        for order, pending, moved in zip(orders, pendings, moves, strict=True):
            if moved is True:
                marked.append((order, pending))
            elif moved is False:
                moved_meanwhile.append(order)
            else:
                _skip_or_raise(order, moved)
        return marked, moved_meanwhile

    async def _cancel_batch(self, batch: list[tuple[Order, Order]]) -> list[Order]:
        """One request to the broker for ``batch`` (each order before, and pending_cancel);
        their outcomes committed together."""
        try:
            async with asyncio.timeout(self._broker_timeout_s):
                acks = await self._broker.cancel_many([pending for _, pending in batch])
        except (TimeoutError, BrokerTransportError) as exc:
            # They stay pending_cancel: the broker's reports (or reconciliation) settle them.
            log.warning("mass cancel of %d orders not confirmed: %r", len(batch), exc)
            return [pending for _, pending in batch]
        results = await asyncio.gather(
            *(
                self._after_cancel(before, pending, ack)
                for (before, pending), ack in zip(batch, acks, strict=True)
            ),
            return_exceptions=True,
        )
        done: list[Order] = []
        for (before, _), result in zip(batch, results, strict=True):
            if isinstance(result, Order):
                done.append(result)
            else:
                _skip_or_raise(before, result)
        return done


def _skip_or_raise(order: Order, result: object) -> None:
    """One order of a mass cancel that failed: logged, the others go on (a kill switch
    cancels through here); it stays as it is, for its reports or a retry. Only what is not
    an error (a cancellation of the caller) is raised."""
    if isinstance(result, GatewayError):
        log.info("cancel-all skipped %s: %s", order.id, result.detail)
    elif isinstance(result, Exception):
        log.error("cancel-all could not cancel %s", order.id, exc_info=result)
    elif isinstance(result, BaseException):
        raise result


def _client_order_id(intent: OrderIntent, idempotency_key: str | None) -> str | None:
    """The client's key for this order (header or body), or None if it sent none."""
    if idempotency_key is not None:
        if intent.client_order_id is not None and intent.client_order_id != idempotency_key:
            raise InvalidOrder(
                "Idempotency-Key and client_order_id differ: send one, or both equal"
            )
        return idempotency_key
    return intent.client_order_id


def _problem(error: GatewayError, order: Order) -> Answer:
    ERRORS.labels(error.code).inc()
    body = render_problem(error, order_id=order.id, order_status=order.status.value)
    return Answer(error.status, body, first_headers=error.headers or None)
