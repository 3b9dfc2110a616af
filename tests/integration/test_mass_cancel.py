"""A mass cancel (DELETE /v1/orders, a kill switch's cancel_open) against a real gateway,
real Redis and the paper exchange: every open order ended, in a few broker requests."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from app.storage.redis.keys import SimKeys
from tests.conftest import Launch
from tests.helpers.clients import trader_and_admin
from tests.helpers.database import order_story
from tests.helpers.orders import eventually_status, limit, redis_position, resting_buy
from tests.helpers.problems import assert_problem
from tests.helpers.processes import applier_of, stopped

RESTING = 110  # three requests to the broker: 50, 50 and 10


async def test_a_mass_cancel_ends_every_open_order_in_a_few_broker_requests(
    fresh: Launch,
) -> None:
    gateway = fresh(workers=2, ORDERGATE_MASS_CANCEL_BATCH="50")
    async with trader_and_admin(gateway, "desk") as (client, admin):
        senders = asyncio.Semaphore(32)

        async def rest(n: int) -> None:
            async with senders:  # far below the market: each rests at the venue
                answer = await client.post("/v1/orders", json=limit("1.00", qty=str(n + 1)))
                assert answer.status_code == 201, answer.text

        await asyncio.gather(*(rest(n) for n in range(RESTING)))
        answer = await client.delete("/v1/orders")
        assert answer.status_code == 200, answer.text
        canceled = answer.json()
        assert len(canceled) == RESTING
        assert {order["status"] for order in canceled} == {"canceled"}

        assert (await admin.get("/v1/sim/broker")).json()["cancel_requests"] == 3
        still_open = await client.get("/v1/orders", params={"status": "new", "limit": 10})
        assert still_open.json()["items"] == []
        state = (await client.get("/v1/risk/state")).json()
        [account] = state["accounts"]
        assert account["reservations"] == []
    gateway.agrees_with_the_order_log(within=5.0)


async def test_a_mass_cancel_meets_orders_the_venue_lost_or_filled_before_the_log_knew(
    fresh: Launch,
) -> None:
    """The venue filled one order and lost two while the applier was stopped: the mass
    cancel cancels the rest, ends the lost ones as lost and gives the filled one back to
    its reports; Redis and the order log agree after."""
    gateway = fresh()
    assert gateway.process is not None
    assert gateway.redis_url is not None
    venue = aioredis.Redis.from_url(gateway.redis_url)
    async with trader_and_admin(gateway, "mixed") as (client, admin):
        orders = [
            (await client.post("/v1/orders", json=resting_buy(price, "5"))).json()
            for price in ("2.00", "1.00", "1.01", "1.02", "1.03", "1.04")
        ]
        filled, lost = orders[0], orders[1:3]
        with stopped(applier_of(gateway.process.pid)):  # the log hears of nothing meanwhile
            moved = await admin.post("/v1/sim/prices", json={"symbol": "AAPL", "price": "1.50"})
            assert moved.json()["matched_orders"] == 1
            for order in lost:
                await venue.delete(SimKeys.order("mixed", order["client_order_id"]))
            answer = await client.delete("/v1/orders")
            assert answer.status_code == 200, answer.text
            assert {o["id"] for o in answer.json()} == {o["id"] for o in orders[1:]}
        await eventually_status(client, filled["id"], "filled")
        for order in lost:
            story = await order_story(gateway.database_url, order["id"])
            assert story[-1][1:] == ("canceled", "broker.order_lost"), story
        for order in orders[3:]:
            assert (await client.get(f"/v1/orders/{order['id']}")).json()["status"] == "canceled"
        assert await redis_position(client, "AAPL") == (5, 0)
    await venue.aclose()
    gateway.agrees_with_the_order_log(within=5.0)


async def test_a_mass_cancel_lost_in_transport_leaves_the_orders_live_and_cancelable(
    fresh: Launch,
) -> None:
    """The broker's request failed unsent: the orders answer pending_cancel, reconciliation
    finds them still live at the venue and says so, and a second mass cancel ends them."""
    gateway = fresh()
    async with trader_and_admin(gateway, "unsent") as (client, admin):
        orders = [
            (await client.post("/v1/orders", json=limit("1.00", qty=str(n + 1)))).json()
            for n in range(4)
        ]
        assert (await admin.put("/v1/sim/broker", json={"fail_rate": 1})).status_code == 200
        single = await client.delete(f"/v1/orders/{orders[0]['id']}")
        problem = assert_problem(single, 503, "broker.unavailable")
        assert (problem["order_id"], problem["order_status"]) == (orders[0]["id"], "pending_cancel")
        answer = await client.delete("/v1/orders")
        assert answer.status_code == 200, answer.text
        assert len(answer.json()) == 3  # the first is pending_cancel already: not asked again
        assert {o["status"] for o in answer.json()} == {"pending_cancel"}
        assert (await admin.put("/v1/sim/broker", json={})).status_code == 200
        for order in orders:  # reconciliation asks the venue: still live there
            await eventually_status(client, order["id"], "new")
            story = await order_story(gateway.database_url, order["id"])
            assert story[-1][1:] == ("new", "cancel_not_received"), story
        [account] = (await client.get("/v1/risk/state")).json()["accounts"]
        assert len(account["reservations"]) == 4  # still live, still reserved

        again = await client.delete("/v1/orders")
        assert {o["status"] for o in again.json()} == {"canceled"}
        assert (await admin.get("/v1/sim/broker")).json()["cancel_requests"] == 1
        [account] = (await client.get("/v1/risk/state")).json()["accounts"]
        assert account["reservations"] == []
    gateway.agrees_with_the_order_log(within=5.0)


async def test_a_mass_cancel_waiting_for_its_token_is_not_undone_by_reconciliation(
    fresh: Launch,
) -> None:
    """Its orders become pending_cancel only once the request can go: left pending_cancel
    while waiting (longer than reconcile_after_s here), reconciliation would find them
    live at the venue and put them back to new."""
    gateway = fresh()
    key = gateway.new_key("slow-kill")
    async with gateway.client(key) as client:
        orders = [
            (await client.post("/v1/orders", json=limit("1.00", qty=str(n + 1)))).json()
            for n in range(4)
        ]
    gateway.stop()
    gateway.env["ORDERGATE_BROKER_GUARD__PACING__ORDER_PLACEMENT__RATE"] = "0.3"
    gateway.env["ORDERGATE_BROKER_GUARD__PACING__ORDER_PLACEMENT__BURST"] = "1"
    gateway.start()
    async with gateway.client(key) as client:
        # The one token there is goes to a single cancel; the mass cancel then waits ~3 s.
        single = await client.delete(f"/v1/orders/{orders[0]['id']}")
        assert single.json()["status"] == "canceled", single.text
        answer = await client.delete("/v1/orders")
        assert answer.status_code == 200, answer.text
        assert {o["status"] for o in answer.json()} == {"canceled"}
        for order in orders[1:]:
            story = await order_story(gateway.database_url, order["id"])
            assert [to for _, to, _ in story] == [
                "pending_new",
                "new",
                "pending_cancel",
                "canceled",
            ]
    gateway.agrees_with_the_order_log(within=5.0)
