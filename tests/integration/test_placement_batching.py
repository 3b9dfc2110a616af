"""Placement batching (throughput mode) against a real gateway, real Redis and the paper
exchange: orders go in batches of a few requests, each caller gets its own answer, and a
batch that fails fails each of its orders as a single placement would."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.conftest import Gateway, Launch
from tests.helpers.clients import trader_and_admin
from tests.helpers.orders import eventually_status, limit, market, order_events
from tests.helpers.problems import assert_problem

THROUGHPUT = {
    "ORDERGATE_PLACEMENT_BATCHING__MODE": "throughput",
    "ORDERGATE_PLACEMENT_BATCHING__MAX_ORDERS": "50",
    "ORDERGATE_PLACEMENT_BATCHING__MAX_WAIT_MS": "10",
}


async def _send_together(client: httpx.AsyncClient, bodies: list[dict[str, Any]]) -> list[Any]:
    return await asyncio.gather(*(client.post("/v1/orders", json=body) for body in bodies))


async def _venue(admin: httpx.AsyncClient) -> dict[str, Any]:
    state: dict[str, Any] = (await admin.get("/v1/sim/broker")).json()
    return state


async def test_batched_placements_each_get_their_own_answer_in_few_requests(
    fresh: Launch,
) -> None:
    gateway: Gateway = fresh(workers=2, **THROUGHPUT)
    async with trader_and_admin(gateway, "batched") as (client, admin):
        # Market orders fill, limits far below the market rest, a limit above it fills:
        # each answer must be its own order's.
        bodies = [
            market("MSFT", qty=str(n % 7 + 1))
            if n % 3 == 0
            else limit("1.00" if n % 3 == 1 else "10000.00", qty=str(n % 5 + 1))
            for n in range(300)
        ]
        answers = await _send_together(client, bodies)
        for body, answer in zip(bodies, answers, strict=True):
            assert answer.status_code == 201, answer.text
            order = answer.json()
            assert order["client_order_id"] == body["client_order_id"]
            assert order["qty"] == body["qty"]
            assert order["status"] == "new"
        venue = await _venue(admin)
        assert venue["placements"] == 300
        # 300 orders sent together by one client: many share a request.
        assert venue["place_requests"] < 150, venue

        for body, answer in zip(bodies, answers, strict=True):
            resting = "limit_price" in body and body["limit_price"] == "1.00"
            await eventually_status(client, answer.json()["id"], "new" if resting else "filled")
        state = (await client.get("/v1/risk/state")).json()
        [account] = state["accounts"]
        assert len(account["reservations"]) == 100  # the resting ones
    gateway.agrees_with_the_order_log(within=5.0)


async def test_a_batch_that_fails_in_transport_fails_each_order_like_a_single_placement(
    fresh: Launch,
) -> None:
    gateway: Gateway = fresh(
        ORDERGATE_SIM__FAIL_RATE="1.0",
        # Forty transport failures would open the breaker after five: not this test.
        ORDERGATE_BROKER_GUARD__BREAKER_FAILURE_THRESHOLD="1000",
        **THROUGHPUT,
    )
    async with trader_and_admin(gateway, "down") as (client, admin):
        answers = await _send_together(client, [market("SPY") for _ in range(40)])
        for answer in answers:
            problem = assert_problem(answer, 503, "broker.unavailable")
            assert problem["order_status"] == "unknown"
        assert (await _venue(admin))["placements"] == 0  # no request reached the venue
        for answer in answers:
            resolved = await eventually_status(client, answer.json()["order_id"], "rejected")
            assert resolved["reject_reason"] == "broker.not_received"
        [account] = (await client.get("/v1/risk/state")).json()["accounts"]
        assert account["reservations"] == []
    gateway.agrees_with_the_order_log(within=5.0)


async def test_fail_next_fails_exactly_that_many_orders_of_a_batch(fresh: Launch) -> None:
    gateway: Gateway = fresh(ORDERGATE_BROKER_GUARD__BREAKER_FAILURE_THRESHOLD="1000", **THROUGHPUT)
    async with trader_and_admin(gateway, "some-fail") as (client, admin):
        assert (await admin.put("/v1/sim/broker", json={"fail_next": 7})).status_code == 200
        answers = await _send_together(client, [market("QQQ") for _ in range(30)])
        failed = [a for a in answers if a.status_code == 503]
        assert len(failed) == 7
        for answer in failed:
            assert_problem(answer, 503, "broker.unavailable")
        assert sum(a.status_code == 201 for a in answers) == 23
        venue = await _venue(admin)
        assert (venue["placements"], venue["failed_by_fail_next"]) == (30, 7)
        assert venue["place_requests"] < 30
        for answer in failed:
            await eventually_status(client, answer.json()["order_id"], "rejected")
    gateway.agrees_with_the_order_log(within=5.0)


async def test_a_batch_answered_after_the_timeout_places_each_order_once(
    fresh: Launch,
) -> None:
    gateway: Gateway = fresh(
        ORDERGATE_BROKER_TIMEOUT_MS="200",
        ORDERGATE_SIM__ANSWER_DELAY_MS="600",
        ORDERGATE_BROKER_GUARD__BREAKER_FAILURE_THRESHOLD="1000",
        **THROUGHPUT,
    )
    async with trader_and_admin(gateway, "late") as (client, admin):
        answers = await _send_together(client, [market("AAPL") for _ in range(20)])
        for answer in answers:
            problem = assert_problem(answer, 504, "broker.timeout")
            assert problem["order_status"] == "unknown"
        for answer in answers:
            order_id = answer.json()["order_id"]
            await eventually_status(client, order_id, "filled")
            story = await order_events(gateway, order_id)
            assert story[0] == (None, "pending_new")
            assert story[-1][1] == "filled", story
        assert (await _venue(admin))["placements"] == 20  # each once, never re-sent
        [account] = (await client.get("/v1/risk/state")).json()["accounts"]
        assert account["reservations"] == []
    gateway.agrees_with_the_order_log(within=5.0)
