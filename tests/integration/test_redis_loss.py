"""Redis coming back empty (FLUSHALL, or a restart without persistence) under a running
gateway: order entry carries on, and orders whose state at the paper exchange was lost with
it are reconciled, their reservations given back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from app.storage.redis.keys import SimKeys
from tests.conftest import Gateway, Launch, _backends
from tests.helpers.database import force_status, order_story
from tests.helpers.orders import (
    database_position,
    eventually_status,
    market,
    redis_position,
    resting_buy,
)
from tests.helpers.processes import applier_of, stopped


async def test_an_order_reaching_an_emptied_paper_exchange_first_recreates_its_prices(
    fresh: Launch,
) -> None:
    gateway: Gateway = fresh()
    assert gateway.process is not None
    assert gateway.redis_url is not None
    venue = aioredis.Redis.from_url(gateway.redis_url)
    async with gateway.client(gateway.new_key("emptied")) as client:
        before = (await client.post("/v1/orders", json=market("AAPL"))).json()
        await eventually_status(client, before["id"], "filled")
        # The applier's housekeeping would re-seed the venue; held back, the next order's
        # own script is the first to find it empty.
        with stopped(applier_of(gateway.process.pid)):
            await venue.flushdb()
            first = await client.post("/v1/orders", json=market("AAPL"))
            assert first.status_code == 201, first.text
        await eventually_status(client, first.json()["id"], "filled")
        for symbol in ("AAPL", "MSFT"):  # every symbol, not only the one that was traded
            later = await client.post("/v1/orders", json=market(symbol))
            assert later.status_code == 201, later.text
            await eventually_status(client, later.json()["id"], "filled")
    await venue.aclose()


async def test_live_orders_lost_with_the_venues_state_end_canceled_and_free_their_limits(
    fresh: Launch,
) -> None:
    gateway: Gateway = fresh()
    assert gateway.redis_url is not None
    account = "lost"
    venue = aioredis.Redis.from_url(gateway.redis_url)
    async with (
        gateway.client(gateway.new_key(account)) as client,
        gateway.client(gateway.new_key("ops", "admin")) as admin,
    ):
        limits = {"max_position": "400", "max_open_orders": 2}
        assert (await admin.put(f"/v1/risk/limits/{account}", json=limits)).status_code == 200
        partly = (await client.post("/v1/orders", json=resting_buy("1.00", "200"))).json()
        # One match at 0.99 fills the top of book (100 of 200); the applier's housekeeping,
        # which matches every symbol now and then, is held back until the price has moved
        # away again, or it could fill the rest.
        assert gateway.process is not None
        with stopped(applier_of(gateway.process.pid)):
            for price in ("0.99", "230"):
                moved = await admin.post("/v1/sim/prices", json={"symbol": "AAPL", "price": price})
                assert moved.status_code == 200, moved.text
        await eventually_status(client, partly["id"], "partially_filled")
        untouched = (await client.post("/v1/orders", json=resting_buy("0.50", "100"))).json()
        third = await client.post("/v1/orders", json=resting_buy("0.50", "1"))
        assert third.json()["code"] == "risk.max_open_orders"

        await venue.flushdb()  # both orders' book entries go with it

        for order in (partly, untouched):
            await eventually_status(client, order["id"], "canceled", within=10)
            story = await order_story(gateway.database_url, order["id"])
            assert story[-1][1:] == ("canceled", "broker.order_lost"), story
        # Their reservations are released and what filled stays held: the open-order slots
        # and the position limit are free again (Redis's risk state is rebuilt from the
        # order log for this order), and Redis agrees with the order log.
        again = await client.post("/v1/orders", json=resting_buy("0.50", "200"))
        assert again.status_code == 201, again.text
        assert await redis_position(client, "AAPL") == (100, 200)
        assert await database_position(client, "AAPL") == 100
    await venue.aclose()
    gateway.agrees_with_the_order_log()


async def test_a_cancel_of_an_order_the_venue_lost_succeeds(fresh: Launch) -> None:
    gateway: Gateway = fresh()
    assert gateway.process is not None
    assert gateway.redis_url is not None
    venue = aioredis.Redis.from_url(gateway.redis_url)
    async with gateway.client(gateway.new_key("lost-cancel")) as client:
        order = (await client.post("/v1/orders", json=resting_buy("1.00", "5"))).json()
        other = (await client.post("/v1/orders", json=resting_buy("0.90", "5"))).json()
        with stopped(applier_of(gateway.process.pid)):  # no reconciliation meanwhile
            await venue.flushdb()
            canceled = await client.delete(f"/v1/orders/{order['id']}")
            assert canceled.status_code == 200, canceled.text
            assert canceled.json()["status"] == "canceled"
            # An operator's reconcile finds the other one lost too.
            resolved = gateway.run_cli("reconcile")
            assert resolved.returncode == 0, resolved.stdout + resolved.stderr
            assert "1 orders resolved with the broker" in resolved.stderr
        for lost in (order, other):
            story = await order_story(gateway.database_url, lost["id"])
            assert story[-1][1:] == ("canceled", "broker.order_lost"), story
        assert await redis_position(client, "AAPL") == (0, 0)
    await venue.aclose()
    gateway.agrees_with_the_order_log()


@pytest.mark.parametrize("backend", _backends())
async def test_a_stuck_pending_cancel_is_reconciled_with_the_broker(
    fresh: Launch, backend: str
) -> None:
    """A gateway that died between recording pending_cancel and asking the broker: the
    order is live again if the broker still has it, canceled as lost if it does not."""
    gateway: Gateway = fresh(backend)
    assert gateway.redis_url is not None
    venue = aioredis.Redis.from_url(gateway.redis_url)
    long_ago = datetime.now(UTC) - timedelta(minutes=1)
    async with gateway.client(gateway.new_key("stuck")) as client:
        order = (await client.post("/v1/orders", json=resting_buy("1.00", "5"))).json()
        await force_status(gateway.database_url, order["id"], "pending_cancel", long_ago)
        await eventually_status(client, order["id"], "new", within=10)

        await venue.delete(SimKeys.order("stuck", order["client_order_id"]))  # the venue lost it
        await force_status(gateway.database_url, order["id"], "pending_cancel", long_ago)
        await eventually_status(client, order["id"], "canceled", within=10)
        story = await order_story(gateway.database_url, order["id"])
        assert story[-1][1:] == ("canceled", "broker.order_lost"), story
        assert await redis_position(client, "AAPL") == (0, 0)
    await venue.aclose()
    gateway.agrees_with_the_order_log()
