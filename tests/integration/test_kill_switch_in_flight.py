"""A kill switch with cancel_open against orders still being placed when it trips (a real
gateway, real Redis, the paper exchange slowed): once their placements settle, none of them
is left live; reductions sent after the switch are left alone."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from app.brokers.simulated import FAULTS_REFRESH_S
from tests.conftest import Launch, wait_for
from tests.helpers.clients import trader_and_admin
from tests.helpers.orders import eventually_status, limit, market, order_status

# The paper exchange's one-way latency: a placement reaches it (and the order log hears of it
# from its report) this late; the answer comes twice that late, within the broker timeout.
LATENCY_MS = 1500
# The second sweep comes once every placement in flight must have settled: pacing wait,
# write-ahead, broker timeout, the outcome's write (the gateway's settings below) and more.
SETTLED_WITHIN_S = 20.0


async def kill(admin: httpx.AsyncClient, **scope: str) -> dict[str, Any]:
    body = {**scope, "active": True, "cancel_open": True}
    answer = await admin.post("/v1/risk/kill-switch", json=body)
    assert answer.status_code == 200, answer.text
    outcome: dict[str, Any] = answer.json()
    return outcome


async def reserved(client: httpx.AsyncClient, client_order_id: str) -> bool:
    [account] = (await client.get("/v1/risk/state")).json()["accounts"]
    return client_order_id in {r["client_order_id"] for r in account["reservations"]}


async def test_an_order_on_its_way_to_the_broker_when_the_switch_trips_ends_canceled(
    fresh: Launch,
) -> None:
    gateway = fresh(workers=2, ORDERGATE_BROKER_TIMEOUT_MS="5000", ORDERGATE_RECONCILE_AFTER_S="8")
    async with trader_and_admin(gateway, "in-flight") as (client, admin):
        # A long position, for a reduction to reduce.
        long = await client.post("/v1/orders", json=market("JPM", qty="10"))
        await eventually_status(client, long.json()["id"], "filled")
        slowed = await admin.put("/v1/sim/broker", json={"latency_ms": LATENCY_MS})
        assert slowed.status_code == 200, slowed.text
        await asyncio.sleep(FAULTS_REFRESH_S * 2)  # every worker's venue client has it

        buy = limit("1.00", symbol="JPM", qty="5")  # rests far below the market
        placing = asyncio.create_task(client.post("/v1/orders", json=buy))

        async def at_the_broker() -> bool:
            listed = await client.get("/v1/orders", params={"status": "pending_new"})
            return [o["client_order_id"] for o in listed.json()["items"]] == [
                buy["client_order_id"]
            ]

        await wait_for(at_the_broker)
        outcome = await kill(admin, scope="account", account="in-flight")
        assert outcome["canceled_orders"] == 0  # the first sweep cannot see it yet
        # A reduction after the switch passes it, and must outlive the second sweep.
        reduction = await client.post("/v1/orders", json=limit("1000.00", "JPM", "sell", "4"))
        assert reduction.status_code == 201, reduction.text

        placed = await placing
        assert placed.status_code == 201, placed.text
        assert placed.json()["status"] == "new"  # acknowledged after the first sweep
        await eventually_status(client, placed.json()["id"], "canceled", within=SETTLED_WITHIN_S)
        assert (await order_status(client, reduction.json()["id"]))["status"] == "new"
        [account] = (await client.get("/v1/risk/state")).json()["accounts"]
        assert [r["client_order_id"] for r in account["reservations"]] == [
            reduction.json()["client_order_id"]
        ]
    gateway.agrees_with_the_order_log(within=5.0)


async def test_an_order_waiting_for_its_pacing_token_when_a_global_switch_trips_ends_canceled(
    fresh: Launch,
) -> None:
    """Placed in throughput mode: after its token, it waits in a batch too."""
    gateway = fresh(
        ORDERGATE_BROKER_GUARD__PACING__ORDER_PLACEMENT__RATE="0.5",
        ORDERGATE_BROKER_GUARD__PACING__ORDER_PLACEMENT__BURST="1",
        ORDERGATE_BROKER_GUARD__MAX_WAIT_MS="3000",
        ORDERGATE_PLACEMENT_BATCHING__MODE="throughput",
        ORDERGATE_PLACEMENT_BATCHING__MAX_WAIT_MS="200",
        # An order's timestamps predate its pacing wait: reconciliation (after the suite's
        # 1.5 s) would take one just written after this long a wait for a lost placement.
        ORDERGATE_RECONCILE_AFTER_S="6",
    )
    async with trader_and_admin(gateway, "paced") as (client, admin):
        # The one token there is goes to the first order; the second then waits ~2 s.
        first = await client.post("/v1/orders", json=limit("1.00", qty="1"))
        assert first.status_code == 201, first.text
        second = limit("1.00", qty="2")
        placing = asyncio.create_task(client.post("/v1/orders", json=second))
        await wait_for(lambda: reserved(client, second["client_order_id"]))
        listed = await client.get("/v1/orders", params={"status": "pending_new"})
        assert listed.json()["items"] == []  # not written yet: waiting for its token

        outcome = await kill(admin, scope="global")
        assert outcome["canceled_orders"] == 1  # the first order

        placed = await placing
        assert placed.status_code == 201, placed.text
        await eventually_status(client, placed.json()["id"], "canceled", within=SETTLED_WITHIN_S)
        assert (await order_status(client, first.json()["id"]))["status"] == "canceled"
        [account] = (await client.get("/v1/risk/state")).json()["accounts"]
        assert account["reservations"] == []
    gateway.agrees_with_the_order_log(within=5.0)
