"""A mass cancel (DELETE /v1/orders, a kill switch's cancel_open) against a real gateway,
real Redis and the paper exchange: every open order ended, in a few broker requests."""

from __future__ import annotations

import asyncio

from tests.conftest import Launch
from tests.helpers.orders import limit

RESTING = 1100  # three requests to the broker: 500, 500 and 100


async def test_a_mass_cancel_ends_every_open_order_in_a_few_broker_requests(
    fresh: Launch,
) -> None:
    gateway = fresh(workers=2)
    async with (
        gateway.client(gateway.new_key("desk")) as client,
        gateway.client(gateway.new_key("ops", "admin")) as admin,
    ):
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
