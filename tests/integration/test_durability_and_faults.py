"""Crash safety (kill -9 after 201s) and broker faults (timeouts, transport errors, rejects).

Each test runs a gateway of its own because it kills it or injects faults into its broker.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import secrets
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from app.redisio.embedded import EmbeddedRedis
from app.storage.redis.keys import SimKeys
from app.storage.redis.keys import leader as leader_key
from tests.conftest import DatabaseFactory, Gateway, Launch, _backends, launch_gateway, wait_for
from tests.helpers import processes
from tests.helpers.clients import trader_and_admin
from tests.helpers.orders import eventually_status, limit, market, order_events
from tests.helpers.problems import assert_problem


@pytest.mark.parametrize("backend", _backends())
async def test_kill_9_after_201_loses_no_acknowledged_order(fresh: Launch, backend: str) -> None:
    gateway: Gateway = fresh(backend, workers=2)
    key = gateway.new_key("durable")
    acknowledged: list[str] = []
    stop = asyncio.Event()

    async def submit_forever(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            try:
                response = await client.post(
                    "/v1/orders", json=market("AAPL", side=secrets.choice(["buy", "sell"]))
                )
            except httpx.HTTPError:
                return  # the server died under us: this one was never acknowledged
            if response.status_code == 201:
                acknowledged.append(response.json()["id"])

    async with gateway.client(key) as client:
        senders = [asyncio.create_task(submit_forever(client)) for _ in range(16)]
        await wait_for(lambda: _at_least(acknowledged, 150), within=30)
        gateway.stop(signal.SIGKILL)  # the whole process group, mid-stream
        stop.set()
        await asyncio.gather(*senders)

    gateway.start()
    async with gateway.client(key) as client:
        for order_id in acknowledged:
            response = await client.get(f"/v1/orders/{order_id}")
            assert response.status_code == 200, order_id

        async def nothing_unresolved() -> bool:
            listing = (
                await client.get(
                    "/v1/orders", params={"status": ["pending_new", "unknown"], "limit": 500}
                )
            ).json()
            return listing["items"] == []

        # Orders caught mid-placement are resolved by asking the broker, never placed again.
        await wait_for(nothing_unresolved, within=15)


async def _at_least(items: list[str], count: int) -> bool:
    return len(items) >= count


async def test_broker_timeout_answers_504_and_reconciliation_resolves_it(fresh: Launch) -> None:
    gateway: Gateway = fresh(
        ORDERGATE_SIM__TIMEOUT_RATE="1.0",
        ORDERGATE_BROKER_TIMEOUT_MS="200",
        # Eight timeouts in a row would open the circuit breaker after five: not this test.
        ORDERGATE_BROKER_GUARD__BREAKER_FAILURE_THRESHOLD="100",
    )
    async with gateway.client(gateway.new_key("slow-broker")) as client:
        answers = [await client.post("/v1/orders", json=market("MSFT")) for _ in range(8)]
        for answer in answers:
            problem = assert_problem(answer, 504, "broker.timeout")
            assert problem["order_status"] == "unknown"
        # A retry is the stored answer, not a second placement.
        retry = await client.post("/v1/orders", json=_same_body(answers[0]))
        assert retry.content == answers[0].content

        venue = aioredis.Redis.from_url(gateway.redis_url)
        for answer in answers:
            order_id = answer.json()["order_id"]
            order = (await client.get(f"/v1/orders/{order_id}")).json()
            placed = await venue.exists(SimKeys.order("slow-broker", order["client_order_id"]))
            # The timeout hides whether the venue got it; reconciliation finds out.
            expected = "filled" if placed else "rejected"
            resolved = await eventually_status(client, order_id, expected)
            if not placed:
                assert resolved["reject_reason"] == "broker.not_received"
            story = await order_events(gateway, order_id)
            if placed:  # its reports may come before or after the timeout is recorded
                assert story[0] == (None, "pending_new")
                assert all(a[1] == b[0] for a, b in itertools.pairwise(story))
                assert story[-1][1] == "filled", story
            else:
                assert story == [
                    (None, "pending_new"),
                    ("pending_new", "unknown"),
                    ("unknown", "rejected"),
                ]
        await venue.aclose()
        listing = (await client.get("/v1/orders", params={"limit": 500})).json()["items"]
        assert len(listing) == 8
        # Unknown outcomes kept their reservations until resolved: then fills became
        # position and rejections gave theirs back.
        filled = sum(o["status"] == "filled" for o in listing)
        state = await _own_risk_state(client)
        assert state["reservations"] == []
        assert [Decimal(e["position"]) for e in state["exposure"]] == ([filled] if filled else [0])


async def test_an_order_the_broker_took_but_answered_too_late_is_placed_once_and_filled(
    fresh: Launch,
) -> None:
    gateway: Gateway = fresh(
        ORDERGATE_BROKER_TIMEOUT_MS="200", ORDERGATE_SIM__ANSWER_DELAY_MS="600"
    )
    async with trader_and_admin(gateway, "late-answer") as (client, admin):
        answer = await client.post("/v1/orders", json=market("MSFT"))
        problem = assert_problem(answer, 504, "broker.timeout")
        assert problem["order_status"] == "unknown"
        # Sent again (the client's retry): the same answer, never a second placement.
        retry = await client.post("/v1/orders", json=_same_body(answer))
        assert retry.content == answer.content
        await eventually_status(client, problem["order_id"], "filled")
        venue = (await admin.get("/v1/sim/broker")).json()
        assert venue["placements"] == 1
        story = await order_events(gateway, problem["order_id"])
        assert story[0] == (None, "pending_new")
        assert story[-1][1] == "filled", story
        state = await _own_risk_state(client)
        assert state["reservations"] == []
        assert [Decimal(e["position"]) for e in state["exposure"]] == [1]


def _same_body(answer: httpx.Response) -> dict[str, str]:
    body: dict[str, str] = json.loads(answer.request.content)
    return body


async def test_transport_error_is_503_and_the_order_is_never_placed(fresh: Launch) -> None:
    gateway: Gateway = fresh(ORDERGATE_SIM__FAIL_RATE="1.0")
    async with gateway.client(gateway.new_key("down-broker")) as client:
        answer = await client.post("/v1/orders", json=market("SPY"))
        assert_problem(answer, 503, "broker.unavailable")
        resolved = await eventually_status(client, answer.json()["order_id"], "rejected")
        assert resolved["reject_reason"] == "broker.not_received"
        assert (await _own_risk_state(client))["reservations"] == []


async def test_broker_business_reject_is_stored_with_its_reason(fresh: Launch) -> None:
    gateway: Gateway = fresh(ORDERGATE_SIM__REJECT_RATE="1.0")
    async with gateway.client(gateway.new_key("rejected")) as client:
        answer = await client.post("/v1/orders", json=market("QQQ"))
        problem = assert_problem(answer, 422, "broker.rejected")
        order = (await client.get(f"/v1/orders/{problem['order_id']}")).json()
        assert order["status"] == "rejected"
        assert order["reject_reason"] == "broker.injected_reject"
        assert await order_events(gateway, order["id"]) == [
            (None, "pending_new"),
            ("pending_new", "rejected"),
        ]
        assert (await client.get("/v1/positions")).json() == []
        assert (await _own_risk_state(client))["reservations"] == []  # given back at once


async def _own_risk_state(client: httpx.AsyncClient) -> dict[str, Any]:
    [state] = (await client.get("/v1/risk/state")).json()["accounts"]
    result: dict[str, Any] = state
    return result


async def test_a_killed_applier_is_restarted_and_fills_keep_flowing(fresh: Launch) -> None:
    gateway: Gateway = fresh()
    assert gateway.process is not None
    os.kill(processes.applier_of(gateway.process.pid), signal.SIGKILL)
    async with gateway.client(gateway.new_key("after-crash")) as client:
        ack = (await client.post("/v1/orders", json=market("AAPL"))).json()
        # The lease of the dead applier expires (3 s); the restarted one takes over.
        await eventually_status(client, ack["id"], "filled", within=15)


async def test_app_created_directly_applies_reports_in_process(
    redis_server: EmbeddedRedis, database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    """Without `ordergate serve` (plain uvicorn), the applier runs inside the app."""
    gateway = launch_gateway(
        tmp_path,
        database_factory.create("sqlite"),
        redis_server.url.rsplit("/", 1)[0] + "/15",
        workers=1,
    )
    gateway.stop()
    port = gateway.base_url.rsplit(":", 1)[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--port", port],
        env=gateway.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_for(lambda: _ready(gateway.base_url), within=20)
        async with gateway.client(gateway.new_key("direct")) as client:
            ack = (await client.post("/v1/orders", json=market("MSFT"))).json()
            await eventually_status(client, ack["id"], "filled")
    finally:
        process.terminate()
        process.wait(timeout=10)
        redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + "/15").flushdb()


async def _ready(base_url: str) -> bool:
    try:
        async with httpx.AsyncClient(base_url=base_url) as client:
            return (await client.get("/readyz")).status_code == 200
    except httpx.HTTPError:
        return False


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_sigterm_stops_serve_cleanly_applier_first_then_its_private_redis(
    database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    """What `docker stop` or systemd sends: serve's own clean-up must run (it once died on
    uvicorn's re-raised SIGTERM, taking the applier and Redis down at the same instant)."""
    # No REDIS_URL: serve starts a private redis-server of its own.
    gateway = launch_gateway(tmp_path, database_factory.create("sqlite"), None, workers=1)
    assert gateway.process is not None
    serve = gateway.process
    children = processes.children(serve.pid)
    assert len(children) >= 2  # the applier and the private redis-server
    serve.send_signal(signal.SIGTERM)  # to serve alone, not its process group
    assert serve.wait(timeout=20) == 0
    await wait_for(lambda: _none_alive(children), within=5)
    gateway.process = None
    log = (tmp_path / "gateway.log").read_text()
    assert "Traceback" not in log, log[-3000:]


async def _none_alive(pids: list[int]) -> bool:
    return not any(_alive(pid) for pid in pids)


@pytest.mark.parametrize("backend", _backends())
async def test_kill_9_mid_placement_leaves_no_order_at_the_venue_without_its_row(
    fresh: Launch, backend: str
) -> None:
    """The order's row is written before the broker sees it. Killed while placements are in
    flight to a slow venue (its answers take 40 ms to come back), then restarted: every
    order the venue holds has its row, and each ends as the venue has it."""
    gateway: Gateway = fresh(
        backend,
        workers=2,
        ORDERGATE_SIM__LATENCY_MS="40",
        ORDERGATE_RISK__ORPHAN_RESERVATION_AFTER_S="1",
        # Below the orphan sweep's age together, as they must be.
        ORDERGATE_STORAGE_TIMEOUT_MS="500",
        ORDERGATE_BROKER_GUARD__MAX_WAIT_MS="100",
    )
    account = "mid-flight"
    acknowledged: list[str] = []
    stop = asyncio.Event()

    async def submit_forever(client: httpx.AsyncClient, n: int) -> None:
        while not stop.is_set():
            # Market orders fill at once; limits far below the price rest.
            body = market("AAPL") if n % 2 else limit("1.00", symbol="MSFT", tif="gtc")
            try:
                response = await client.post("/v1/orders", json=body)
            except httpx.HTTPError:
                return
            if response.status_code == 201:
                acknowledged.append(response.json()["client_order_id"])

    async with gateway.client(gateway.new_key(account)) as client:
        senders = [asyncio.create_task(submit_forever(client, n)) for n in range(32)]
        await wait_for(lambda: _at_least(acknowledged, 60), within=30)
        gateway.stop(signal.SIGKILL)
        stop.set()
        await asyncio.gather(*senders)

    venue = aioredis.Redis.from_url(gateway.redis_url)
    at_venue = {}
    async for key in venue.scan_iter(match=SimKeys.order(account, "*")):
        fields = await venue.hmget(key, "coid", "status", "filled")
        coid, status, filled = (value.decode() for value in fields)
        at_venue[coid] = (status, Decimal(int(filled)) / 10**6)
    assert set(acknowledged) <= set(at_venue)

    gateway.start()
    async with gateway.client(gateway.new_key(account)) as client:

        async def rows() -> dict[str, dict[str, Any]]:
            listing = (await client.get("/v1/orders", params={"limit": 500})).json()
            return {o["client_order_id"]: o for o in listing["items"]}

        stored = await rows()
        missing = set(at_venue) - set(stored)
        assert not missing, f"the venue holds {len(missing)} orders the log never wrote"

        async def as_the_venue_has_them() -> bool:
            stored = await rows()
            return all(
                (stored[c]["status"], Decimal(stored[c]["filled_qty"])) == at_venue[c]
                for c in at_venue
            ) and not any(o["status"] in ("pending_new", "unknown") for o in stored.values())

        await wait_for(as_the_venue_has_them, within=20)
        for coid, order in (await rows()).items():
            if coid not in at_venue:  # caught before it reached the venue
                assert (order["status"], order["reject_reason"]) == (
                    "rejected",
                    "broker.not_received",
                )
    await venue.aclose()
    # A worker killed between reserving and writing an order left a reservation no order
    # stands behind; the applier's sweep (every 5 s) releases it once 1 s old.
    gateway.agrees_with_the_order_log(within=5 + 1 + 10)


async def test_two_appliers_apply_each_report_once_and_a_paused_leader_is_taken_over(
    fresh: Launch,
) -> None:
    """A second `ordergate applier` beside serve's: one leads (a Redis lease). Frozen, the
    leader is taken over once its lease lapses; woken, it finds itself no longer leading
    (what it was doing when frozen changes nothing, being applied already)."""
    gateway: Gateway = fresh()
    assert gateway.process is not None
    assert gateway.redis_url is not None
    second = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "applier"],
        env=gateway.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    venue = aioredis.Redis.from_url(gateway.redis_url)

    async def leader() -> int:
        holder = await venue.get(leader_key("execution-applier"))
        return int(holder.decode().split("-")[0]) if holder else 0

    appliers = {processes.applier_of(gateway.process.pid), second.pid}
    try:
        async with gateway.client(gateway.new_key("two-appliers")) as client:

            async def all_filled(count: int) -> list[dict[str, Any]]:
                orders = [
                    (await client.post("/v1/orders", json=market())).json() for _ in range(count)
                ]
                return [
                    await eventually_status(client, o["id"], "filled", within=20) for o in orders
                ]

            await all_filled(10)
            first = await leader()
            assert first in appliers
            with processes.stopped(first):
                await all_filled(10)  # by the other, once the lease (3 s) lapses
                taken_over = await leader()
                assert taken_over in appliers - {first}
            await all_filled(10)
            assert await leader() == taken_over  # the woken one does not take it back

            [position] = (await client.get("/v1/positions")).json()
            assert position["qty"] == "30"
            listing = (await client.get("/v1/orders", params={"limit": 500})).json()["items"]
            for order in listing:
                assert await order_events(gateway, order["id"]) == [
                    (None, "pending_new"),
                    ("pending_new", "new"),
                    ("new", "filled"),
                ]
        gateway.agrees_with_the_order_log()
    finally:
        second.terminate()
        second.wait(timeout=10)
        await venue.aclose()
