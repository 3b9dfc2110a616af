"""Redis coming back empty (FLUSHALL, or a restart without persistence) under a running
gateway: order entry carries on, and orders whose state at the paper exchange was lost with
it are reconciled, their reservations given back."""

from __future__ import annotations

import redis.asyncio as aioredis

from tests.conftest import Gateway, Launch
from tests.helpers.processes import applier_of, stopped
from tests.integration.test_orders import eventually_status, market


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
