"""The risk state in Redis and the order log agree whatever order a partial fill, a cancel
and their reports arrive in, through a real gateway whose applier process is frozen
(SIGSTOP) between the fill and the cancel."""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal

import httpx
import redis.asyncio as aioredis

from app.domain.orders import Side
from app.redisio.multiplexed import MultiplexedRedis
from app.storage.redis.keys import RiskKeys
from app.storage.redis.risk_state import RiskStore
from tests.conftest import Gateway, Launch, wait_for
from tests.helpers.orders import (
    database_position,
    eventually_status,
    limit,
    market,
    redis_position,
    resting_buy,
)
from tests.helpers.problems import assert_problem
from tests.helpers.processes import applier_of, stopped


async def test_a_cancel_racing_a_partial_fill_keeps_the_fill_in_the_position(
    fresh: Launch,
) -> None:
    gateway: Gateway = fresh()  # the paper exchange fills at most 100 per match
    assert gateway.process is not None
    account = "racing"
    async with (
        gateway.client(gateway.new_key(account)) as client,
        gateway.client(gateway.new_key("ops", "admin")) as admin,
    ):
        limits = await admin.put(f"/v1/risk/limits/{account}", json={"max_position": "200"})
        assert limits.status_code == 200, limits.text
        resting = await client.post("/v1/orders", json=resting_buy("1.00", qty="200"))
        assert resting.status_code == 201, resting.text

        # The applier is held back: the partial fill's report waits in the broker's stream
        # while the cancel is answered.
        with stopped(applier_of(gateway.process.pid)):
            moved = await admin.post("/v1/sim/prices", json={"symbol": "AAPL", "price": "0.99"})
            assert moved.json()["matched_orders"] == 1  # 100 of the 200 filled
            canceled = await client.delete(f"/v1/orders/{resting.json()['id']}")
            assert canceled.status_code == 200, canceled.text
            assert canceled.json()["status"] == "canceled"
            # The fill the cancel found is position now; nothing is open.
            assert await redis_position(client, "AAPL") == (100, 0)
            # 100 held + 200 > 200: the limit holds though the order log has not heard yet.
            over = await client.post("/v1/orders", json=resting_buy("0.50", qty="200"))
            assert over.status_code == 422, over.text
            assert over.json()["code"] == "risk.position_limit"
            within = await client.post("/v1/orders", json=resting_buy("0.50", qty="100"))
            assert within.status_code == 201, within.text

        async def fill_recorded() -> bool:
            return await database_position(client, "AAPL") == 100

        await wait_for(fill_recorded, within=10)
        # The late reports changed nothing in Redis: it agrees with the order log.
        assert await redis_position(client, "AAPL") == (100, 100)
    gateway.agrees_with_the_order_log()


async def test_reconcile_check_prints_what_redis_and_the_order_log_disagree_on(
    fresh: Launch,
) -> None:
    gateway: Gateway = fresh()
    assert gateway.redis_url is not None
    account = "audited"
    async with gateway.client(gateway.new_key(account)) as client:
        filled = (await client.post("/v1/orders", json=market("MSFT", qty="7"))).json()
        await eventually_status(client, filled["id"], "filled")
        resting = (await client.post("/v1/orders", json=resting_buy("1.00", "5"))).json()
    gateway.agrees_with_the_order_log()

    # Redis loses a fill and forgets the resting order's reservation.
    redis = aioredis.Redis.from_url(gateway.redis_url)
    keys = RiskKeys(account)
    await redis.hset(keys.exposure, "pos:MSFT", "3000000")
    await redis.hdel(keys.reservations, resting["client_order_id"])
    result = gateway.run_cli("reconcile", "--check")
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line.split() for line in result.stdout.splitlines()[1:]]
    assert ["audited", "MSFT", "position", "3", "7"] in lines
    assert ["audited", resting["client_order_id"], "reservation", "none"] == lines[-1][:4]
    assert "buy 5 AAPL, 0 filled" in result.stdout
    # Only the account asked about.
    other = gateway.run_cli("reconcile", "--check", "--account", "someone-else")
    assert other.returncode == 0, other.stdout

    # An account Redis lost altogether is rebuilt from the order log when next used.
    await redis.delete(*keys.all)
    gateway.agrees_with_the_order_log()
    await redis.aclose()


async def test_a_reservation_no_order_stands_behind_is_released_by_the_sweep(
    fresh: Launch,
) -> None:
    """A worker that died between reserving and writing its order left a reservation no
    order stands behind: the applier releases it after orphan_reservation_after_s, and
    leaves a live order's alone."""
    gateway: Gateway = fresh(
        ORDERGATE_RISK__ORPHAN_RESERVATION_AFTER_S="0.5",
        ORDERGATE_STORAGE_TIMEOUT_MS="400",
        ORDERGATE_BROKER_GUARD__MAX_WAIT_MS="50",
    )
    assert gateway.redis_url is not None
    account = "orphaned"
    async with (
        gateway.client(gateway.new_key(account)) as client,
        gateway.client(gateway.new_key("ops", "admin")) as admin,
    ):
        await admin.put(f"/v1/risk/limits/{account}", json={"max_position": "10"})
        live = (await client.post("/v1/orders", json=resting_buy("1.00", "4"))).json()
        redis = MultiplexedRedis(gateway.redis_url)
        ghost = await RiskStore(redis).reserve(
            account, "ghost", "AAPL", Side.BUY, Decimal(6), Decimal(230), None
        )
        await redis.close()
        assert ghost.kind == "ok"
        over = await client.post("/v1/orders", json=resting_buy("1.00", "1"))
        assert over.json()["code"] == "risk.position_limit"  # 4 live + 6 orphaned + 1

        async def only_the_live_order_reserved() -> bool:
            [state] = (await client.get("/v1/risk/state")).json()["accounts"]
            return [r["client_order_id"] for r in state["reservations"]] == [
                live["client_order_id"]
            ]

        # The sweep runs every 5 s; the orphan is older than 0.5 s by the next one.
        await wait_for(only_the_live_order_reserved, within=5 + 0.5 + 10)
        again = await client.post("/v1/orders", json=resting_buy("1.00", "6"))
        assert again.status_code == 201, again.text
    gateway.agrees_with_the_order_log()


async def test_a_cancel_of_an_order_the_venue_already_ended_is_409_and_cancel_all_goes_on(
    fresh: Launch,
) -> None:
    """An IOC's unfilled rest is canceled by the venue itself; with the applier held back
    the log still says new. Canceling it is too late (409), not a failure, and a cancel-all
    cancels the account's other orders regardless."""
    gateway: Gateway = fresh()
    assert gateway.process is not None
    ioc = limit("200", symbol="AAPL", qty="5", tif="ioc")  # below 230: never fills
    async with gateway.client(gateway.new_key("venue-ended")) as client:
        resting = (await client.post("/v1/orders", json=resting_buy("1.00", "5"))).json()
        with stopped(applier_of(gateway.process.pid)):
            first = (await client.post("/v1/orders", json=ioc)).json()
            assert first["status"] == "new"
            too_late = await client.delete(f"/v1/orders/{first['id']}")
            problem = assert_problem(too_late, 409, "order.not_cancelable")
            assert problem["order_status"] == "canceled"

            second = await client.post("/v1/orders", json={**ioc, "client_order_id": "x-2"})
            assert second.status_code == 201
            everything = await client.delete("/v1/orders")
            assert everything.status_code == 200, everything.text
            assert [o["id"] for o in everything.json()] == [resting["id"]]
        for order in (first, second.json(), resting):
            await eventually_status(client, order["id"], "canceled", within=10)
    gateway.agrees_with_the_order_log()


async def test_reconcile_check_under_steady_traffic_reports_nothing_passing(
    fresh: Launch,
) -> None:
    """Orders in flight (reserved, not yet written; filled in Redis, not yet committed) are
    differences of a moment, each one gone by the next comparison: none is reported."""
    gateway: Gateway = fresh()
    stop = asyncio.Event()
    placed = 0

    async def trade(client: httpx.AsyncClient, seed: int) -> None:
        nonlocal placed
        rng = random.Random(seed)
        while not stop.is_set():
            side = rng.choice(["buy", "sell"])
            order = market(rng.choice(["AAPL", "MSFT"]), side=side, qty=str(rng.randint(1, 9)))
            if (await client.post("/v1/orders", json=order)).status_code == 201:
                placed += 1

    async with gateway.client(gateway.new_key("busy")) as client:
        traders = [asyncio.create_task(trade(client, seed)) for seed in range(8)]
        try:
            await wait_for(lambda: _at_least(placed, 50), within=30)
            for _ in range(2):
                result = await asyncio.to_thread(gateway.run_cli, "reconcile", "--check")
                assert result.returncode == 0, result.stdout + result.stderr
            assert placed > 100  # the checks ran while orders flowed
        finally:
            stop.set()
            await asyncio.gather(*traders)
    gateway.agrees_with_the_order_log(within=5)


async def _at_least(count: int, wanted: int) -> bool:
    return count >= wanted
