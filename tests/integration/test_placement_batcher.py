"""PlacementBatcher in process, over the paper exchange on a real Redis: when a batch goes,
and what happens to a caller that stops waiting before its batch is sent."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from app.brokers.batching import PlacementBatcher
from app.brokers.simulated import SimFaults, SimulatedBroker
from app.config import SimulatedBrokerSettings
from app.domain.orders import Order, OrderType, Side, TimeInForce
from app.domain.status import OrderStatus
from app.redisio.embedded import EmbeddedRedis
from app.redisio.multiplexed import MultiplexedRedis

NOW = datetime(2026, 12, 7, tzinfo=UTC)


@pytest.fixture
async def venue(redis_server: EmbeddedRedis) -> AsyncIterator[SimulatedBroker]:
    # The paper exchange's keys are global: a Redis database of its own, emptied after.
    redis = MultiplexedRedis(redis_server.url.rsplit("/", 1)[0] + "/15")
    broker = SimulatedBroker(redis, redis, SimulatedBrokerSettings(), {"AAPL": Decimal(200)})
    await broker.start()
    yield broker
    await redis.execute("FLUSHDB")
    await redis.close()


async def slow(venue: SimulatedBroker, **faults: float) -> None:
    """The venue's faults from now on (the rest as configured: none)."""
    base = SimFaults.of(SimulatedBrokerSettings())
    await venue.set_faults(replace(base, **faults), fail_next=0)


def an_order() -> Order:
    return Order(
        id=secrets.token_hex(6),
        client_order_id=f"c-{secrets.token_hex(6)}",
        account="batcher",
        symbol="AAPL",
        side=Side.BUY,
        qty=Decimal(1),
        type=OrderType.LIMIT,
        limit_price=Decimal(1),  # far below the market: rests
        time_in_force=TimeInForce.DAY,
        status=OrderStatus.PENDING_NEW,
        created_at=NOW,
        updated_at=NOW,
    )


async def status_at(venue: SimulatedBroker, order: Order) -> OrderStatus | None:
    [status] = await venue.statuses([order])
    return status


async def requests_made(venue: SimulatedBroker) -> int:
    return (await venue.fault_state()).place_requests


async def test_a_full_batch_goes_at_once_without_waiting_out_the_window(
    venue: SimulatedBroker,
) -> None:
    batcher = PlacementBatcher(venue, max_orders=5, max_wait_s=30, timeout_s=60)
    orders = [an_order() for _ in range(5)]
    # The window is 30 s: only the count can have sent them within the 5 s allowed.
    acks = await asyncio.wait_for(asyncio.gather(*(batcher.place(o) for o in orders)), 5)
    assert all(ack.accepted for ack in acks)
    assert await requests_made(venue) == 1
    for order in orders:
        assert await status_at(venue, order) is OrderStatus.NEW
    await batcher.close()


async def test_a_caller_that_stops_waiting_before_its_batch_goes_is_never_placed(
    venue: SimulatedBroker,
) -> None:
    batcher = PlacementBatcher(venue, max_orders=50, max_wait_s=0.3, timeout_s=60)
    patient, impatient = an_order(), an_order()
    waiting = asyncio.ensure_future(batcher.place(patient))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(batcher.place(impatient), 0.05)
    assert (await waiting).accepted
    assert await status_at(venue, patient) is OrderStatus.NEW
    # Its caller recorded it unknown; reconciliation will find it never reached the venue.
    assert await status_at(venue, impatient) is None
    assert (await venue.fault_state()).placements == 1
    await batcher.close()


async def test_closing_sends_what_is_waiting(venue: SimulatedBroker) -> None:
    batcher = PlacementBatcher(venue, max_orders=50, max_wait_s=30, timeout_s=60)
    order = an_order()
    waiting = asyncio.ensure_future(batcher.place(order))
    await asyncio.sleep(0)  # it joins the batch
    await batcher.close()
    assert (await waiting).accepted
    assert await status_at(venue, order) is OrderStatus.NEW


async def test_a_batch_still_on_its_way_when_its_callers_time_out_never_arrives(
    venue: SimulatedBroker,
) -> None:
    """The request ends with its first caller's timeout: reconciliation, finding the
    order unknown to the venue, must be right that it never will be."""
    await slow(venue, latency_ms=300)  # each way
    batcher = PlacementBatcher(venue, max_orders=2, max_wait_s=0.01, timeout_s=0.1)
    orders = [an_order(), an_order()]
    results = await asyncio.gather(*(batcher.place(o) for o in orders), return_exceptions=True)
    assert all(isinstance(r, TimeoutError) for r in results), results
    await asyncio.sleep(0.6)  # past when the request would have reached the venue
    for order in orders:
        assert await status_at(venue, order) is None
    assert (await venue.fault_state()).place_requests == 0
    await batcher.close()


async def test_closing_does_not_wait_past_the_timeout_for_a_batch_that_hangs(
    venue: SimulatedBroker,
) -> None:
    await slow(venue, timeout_rate=1)  # every request hangs, before or after placing
    batcher = PlacementBatcher(venue, max_orders=1, max_wait_s=0.01, timeout_s=0.2)
    waiting = asyncio.ensure_future(batcher.place(an_order()))
    await asyncio.sleep(0.05)  # its batch is out, hanging
    # The 0.2 s timeout ends it; 5 s only bounds this test if it does not.
    await asyncio.wait_for(batcher.close(), 5)
    with pytest.raises(TimeoutError):
        await waiting
