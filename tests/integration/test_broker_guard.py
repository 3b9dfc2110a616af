"""The broker's protection against a real gateway (two workers), real Redis and the paper
exchange: pacing shared by every worker, the circuit breaker, their endpoints."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

import httpx
import redis.asyncio as aioredis

from app.storage.redis.keys import SimKeys
from tests.conftest import Gateway, Launch
from tests.helpers.clients import trader_and_admin
from tests.helpers.orders import eventually_status, limit, market
from tests.helpers.problems import assert_problem

# A gateway's pacing buckets start empty; at 40 a second the burst of 50 is there after:
FULL_S = 1.3
# The venue's placement times lag the tokens' by each order's write-ahead and broker call,
# and the burst's first orders lag most (they queue for the same commits): the tokens'
# window is longer than the venue's span by up to this much on a loaded machine.
TOKEN_TO_VENUE_SKEW_S = 0.05
PACED_40_BURST_50 = {
    "ORDERGATE_BROKER_GUARD__PACING__ORDER_PLACEMENT__RATE": "40",
    "ORDERGATE_BROKER_GUARD__PACING__ORDER_PLACEMENT__BURST": "50",
}


def varied(n: int, symbol: str = "AAPL") -> dict[str, Any]:
    """A market order unlike the one before it (the duplicate-order check refuses a same
    symbol, side and quantity within half a second), flat over pairs."""
    return market(symbol, side="buy" if n % 2 else "sell", qty=str(1 + n % 997))


async def venue_placement_times_ms(gateway: Gateway) -> list[int]:
    """When the paper exchange received each placement: its first report's time (its own
    clock, Redis's), in arrival order."""
    venue = aioredis.Redis.from_url(gateway.redis_url)
    try:
        entries = await venue.xrange(SimKeys.reports)
    finally:
        await venue.aclose()
    return sorted(
        int(fields[b"t"]) for _, fields in entries if fields[b"s"] in (b"new", b"rejected")
    )


async def test_pacing_holds_the_broker_to_its_rate_across_workers_and_producers(
    fresh: Launch,
) -> None:
    gateway = fresh(workers=2, **PACED_40_BURST_50)
    key = gateway.new_key("pacer")
    await asyncio.sleep(FULL_S)
    numbers = itertools.count()
    answers: list[int] = []
    run_until = time.monotonic() + 10

    async def producer() -> None:
        async with gateway.client(key) as client:
            while time.monotonic() < run_until:
                answer = await client.post("/v1/orders", json=varied(next(numbers)))
                answers.append(answer.status_code)
                if answer.status_code == 429:
                    assert_problem(answer, 429, "pacing.rate_limited")
                    await asyncio.sleep(0.05)
                else:
                    assert answer.status_code == 201, answer.text

    await asyncio.gather(*(producer() for _ in range(4)))
    times = await venue_placement_times_ms(gateway)
    assert len(times) == answers.count(201)
    span_s = (times[-1] - times[0]) / 1000
    # Never more than a full bucket and the refill since; and the budget was used.
    assert len(times) <= 50 + 40 * (span_s + TOKEN_TO_VENUE_SKEW_S) + 1
    assert len(times) >= 0.8 * (50 + 40 * 10)
    busiest = max(sum(1 for t in times[i:] if t < start + 1000) for i, start in enumerate(times))
    assert busiest <= 50 + 40 + 1, busiest


async def test_orders_past_the_pacing_wait_are_refused_at_once_and_written_as_denied(
    fresh: Launch,
) -> None:
    gateway = fresh(ORDERGATE_BROKER_GUARD__MAX_WAIT_MS="250", **PACED_40_BURST_50)
    async with gateway.client(gateway.new_key("flood")) as client:
        await asyncio.sleep(FULL_S)
        answers = await asyncio.gather(
            *(client.post("/v1/orders", json=varied(n)) for n in range(120))
        )
        placed = [a for a in answers if a.status_code == 201]
        refused = [a for a in answers if a.status_code != 201]
        # The burst at once, then what refills while the requests arrive and within the
        # wait (40/s for 0.25 s); the rest refused.
        assert len(placed) >= 55, [a.status_code for a in answers]
        assert len(refused) >= 40, [a.status_code for a in answers]
        for answer in refused:
            problem = assert_problem(answer, 429, "pacing.rate_limited")
            assert int(answer.headers["retry-after"]) >= 1
            assert problem["order_status"] == "denied"
            assert problem["retry_after_ms"] > 0
        times = await venue_placement_times_ms(gateway)
        assert len(times) == len(placed)
        span_s = (times[-1] - times[0]) / 1000
        assert len(times) <= 50 + 40 * (span_s + TOKEN_TO_VENUE_SKEW_S) + 1
        # Stored as denied with the refusal's code; its reservation given back.
        order = (await client.get(f"/v1/orders/{refused[0].json()['order_id']}")).json()
        assert (order["status"], order["reject_reason"]) == ("denied", "pacing.rate_limited")
        # The same request again is the same (final) answer, not a second chance.
        again = await client.post("/v1/orders", json=_body(refused[0]))
        assert again.content == refused[0].content
        assert again.headers["idempotent-replayed"] == "true"
    gateway.agrees_with_the_order_log(within=5.0)


def _body(answer: httpx.Response) -> Any:
    return json.loads(answer.request.content)


async def test_the_breaker_opens_after_five_failures_and_lets_three_trials_through(
    fresh: Launch,
) -> None:
    gateway = fresh(workers=2, ORDERGATE_BROKER_GUARD__BREAKER_OPEN_S="1.5")
    admin_key = gateway.new_key("ops", "admin")
    async with (
        gateway.client(gateway.new_key("breaker")) as client,
        gateway.client(admin_key) as admin,
    ):
        put = await admin.put("/v1/sim/broker", json={"fail_next": 100})
        assert put.status_code == 200, put.text
        failures = [await client.post("/v1/orders", json=varied(n)) for n in range(5)]
        for answer in failures:
            assert_problem(answer, 503, "broker.unavailable")
        opened_at = time.monotonic()
        for n in range(5, 9):
            answer = await client.post("/v1/orders", json=varied(n))
            problem = assert_problem(answer, 503, "broker.circuit_open")
            assert 1 <= int(answer.headers["retry-after"]) <= 2
            assert problem["order_status"] == "denied"
        venue = (await admin.get("/v1/sim/broker")).json()
        assert (venue["placements"], venue["failed_by_fail_next"]) == (5, 5)
        [breaker] = (await client.get("/v1/breakers")).json()
        assert (breaker["state"], breaker["times_opened"]) == ("open", 1)

        # A slow but healthy broker from now on; once the wait is over, three trials.
        put = await admin.put("/v1/sim/broker", json={"latency_ms": 299.5})
        assert put.status_code == 200, put.text
        assert put.json()["latency_ms"] == 299.5
        await asyncio.sleep(max(0.0, opened_at + 1.6 - time.monotonic()))
        answers = await asyncio.gather(
            *(client.post("/v1/orders", json=varied(n)) for n in range(20, 30))
        )
        assert sorted(a.status_code for a in answers) == [201] * 3 + [503] * 7
        for answer in answers:
            if answer.status_code == 503:
                assert_problem(answer, 503, "broker.circuit_open")
        assert (await admin.get("/v1/sim/broker")).json()["placements"] == 5 + 3
        [breaker] = (await client.get("/v1/breakers")).json()
        assert (breaker["state"], breaker["times_closed"]) == ("closed", 1)
        assert (await client.post("/v1/orders", json=varied(40))).status_code == 201
        # The orders that failed in transport are resolved by asking the venue.
        for answer in failures:
            await eventually_status(client, answer.json()["order_id"], "rejected")


async def test_an_open_breaker_refuses_a_cancel_naming_the_order_but_not_a_mass_cancel(
    fresh: Launch,
) -> None:
    gateway = fresh()
    async with trader_and_admin(gateway, "kill-switch") as (client, admin):
        resting = [
            (await client.post("/v1/orders", json=limit("1.00", qty=str(n + 1)))).json()
            for n in range(3)
        ]
        assert [order["status"] for order in resting] == ["new"] * 3
        assert (await admin.put("/v1/sim/broker", json={"fail_next": 5})).status_code == 200
        for n in range(5):
            failed = await client.post("/v1/orders", json=varied(n))
            assert_problem(failed, 503, "broker.unavailable")

        refused = await client.delete(f"/v1/orders/{resting[0]['id']}")
        problem = assert_problem(refused, 503, "broker.circuit_open")
        assert (problem["order_id"], problem["order_status"]) == (resting[0]["id"], "new")
        assert refused.headers["retry-after"]
        unchanged = (await client.get(f"/v1/orders/{resting[0]['id']}")).json()
        assert unchanged["status"] == "new"
        assert (await admin.get("/v1/sim/broker")).json()["cancel_requests"] == 0

        # A kill switch must not be refused: the mass cancel does not pass the guard.
        everything = await client.delete("/v1/orders")
        assert everything.status_code == 200, everything.text
        assert sorted(o["id"] for o in everything.json()) == sorted(o["id"] for o in resting)
        assert {o["status"] for o in everything.json()} == {"canceled"}
        assert (await admin.get("/v1/sim/broker")).json()["cancel_requests"] == 1
        [breaker] = (await client.get("/v1/breakers")).json()
        assert breaker["state"] == "open"


async def placement_bucket(admin: httpx.AsyncClient) -> dict[str, Any]:
    pacing = (await admin.get("/v1/pacing")).json()
    [bucket] = [b for b in pacing["buckets"] if b["endpoint"] == "order_placement"]
    return dict(bucket)


async def test_a_mass_cancel_waits_its_turn_for_a_token_where_an_order_is_refused(
    fresh: Launch,
) -> None:
    gateway = fresh(
        ORDERGATE_BROKER_GUARD__PACING__ORDER_PLACEMENT__RATE="4",
        ORDERGATE_BROKER_GUARD__PACING__ORDER_PLACEMENT__BURST="1",
        # An order finding no token now is refused at once.
        ORDERGATE_BROKER_GUARD__MAX_WAIT_MS="0",
    )
    async with trader_and_admin(gateway, "paced-desk") as (client, admin):
        resting = []
        for n in range(2):
            await asyncio.sleep(0.3)  # a token, refilled at 4 a second
            answer = await client.post("/v1/orders", json=limit("1.00", qty=str(n + 1)))
            assert answer.status_code == 201, answer.text
            resting.append(answer.json()["id"])
        # The bucket is empty now: an order is refused, a mass cancel waits for its token.
        refused = await client.post("/v1/orders", json=limit("1.00", qty="9"))
        assert_problem(refused, 429, "pacing.rate_limited")
        before = await placement_bucket(admin)
        everything = await client.delete("/v1/orders")
        assert everything.status_code == 200, everything.text
        assert sorted(o["id"] for o in everything.json()) == sorted(resting)
        assert {o["status"] for o in everything.json()} == {"canceled"}
        after = await placement_bucket(admin)
        # One token for the one request (waited for, unless this machine stalled meanwhile).
        assert after["taken"] + after["waited"] == before["taken"] + before["waited"] + 1
        assert after["throttled"] == before["throttled"]


async def test_reconciliations_status_queries_keep_to_the_executions_pacing(
    fresh: Launch,
) -> None:
    gateway = fresh(
        ORDERGATE_BROKER_GUARD__PACING__EXECUTIONS__RATE="0.5",
        ORDERGATE_BROKER_GUARD__PACING__EXECUTIONS__BURST="1",
        # The live-order check would ask twenty times a second: pacing allows one in two s.
        ORDERGATE_LIVE_ORDER_CHECK_INTERVAL_S="0.05",
    )
    async with trader_and_admin(gateway, "watched") as (client, admin):
        resting = await client.post("/v1/orders", json=limit("1.00"))
        assert resting.status_code == 201, resting.text
        before = (await admin.get("/v1/sim/broker")).json()["status_requests"]
        started = time.monotonic()
        await asyncio.sleep(4)
        asked = (await admin.get("/v1/sim/broker")).json()["status_requests"] - before
        elapsed = time.monotonic() - started
        assert 1 <= asked <= 0.5 * elapsed + 2, (asked, elapsed)
        pacing = (await admin.get("/v1/pacing")).json()
        [bucket] = [b for b in pacing["buckets"] if b["endpoint"] == "executions"]
        assert bucket["throttled"] > 0  # the rounds that found no token asked nothing
        # Waiting for tokens never holds up the broker's reports: a fill still arrives at
        # once (a wait of 2 s per query would show here).
        filled = await client.post("/v1/orders", json=market("MSFT"))
        assert filled.status_code == 201, filled.text
        await eventually_status(client, filled.json()["id"], "filled", within=1.5)


async def test_the_guards_endpoints_show_their_state_and_refuse_bad_input(
    gateway: Gateway, admin: httpx.AsyncClient, alice: httpx.AsyncClient
) -> None:
    pacing = (await admin.get("/v1/pacing")).json()
    buckets = {b["endpoint"]: b for b in pacing["buckets"]}
    assert set(buckets) == {
        "rt_marketdata",
        "historical_data",
        "order_placement",
        "account_data",
        "executions",
    }
    # The Interactive Brokers profile, but for the tests' own placement budget.
    assert (buckets["historical_data"]["rate"], buckets["historical_data"]["burst"]) == (0.1, 60)
    assert (buckets["executions"]["rate"], buckets["executions"]["burst"]) == (10, 20)
    assert pacing["max_wait_ms"] == 500
    assert_problem(await alice.get("/v1/pacing"), 403, "auth.forbidden")
    [breaker] = (await alice.get("/v1/breakers")).json()
    assert breaker["broker"] == "simulated"

    before = (await admin.get("/v1/sim/broker")).json()
    for body in (
        {"reject_rate": 2},
        {"fail_rate": -0.1},
        {"latency_ms": -1},
        {"fail_next": "many"},
        {"fail_next": -1},
        {"fail_next": True},
        {"fail_next": 1.5},
        {"reject_rate": 1.01},
        {"latency": 5},
        [],
    ):
        assert_problem(await admin.put("/v1/sim/broker", json=body), 422, "request.invalid")
    assert_problem(await alice.put("/v1/sim/broker", json={"fail_next": 1}), 403, "auth.forbidden")
    assert_problem(await alice.get("/v1/sim/broker"), 403, "auth.forbidden")
    assert (await admin.get("/v1/sim/broker")).json() == before
