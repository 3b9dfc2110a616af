"""Pre-trade risk through the real gateway (2 uvicorn workers), real Redis, real database."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import statistics
import threading
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as syncredis

from app.redisio.embedded import EmbeddedRedis
from app.storage.redis.keys import RiskKeys
from tests.conftest import (
    REPO,
    DatabaseFactory,
    Gateway,
    Launch,
    free_port,
    launch_gateway,
    wait_for,
)
from tests.helpers.orders import coid, eventually_status, limit, market

SCALE = 10**6
REDIS_TIMEOUT_S = 0.08  # the risk decision's Redis budget in the outage test


def new_account(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@pytest.fixture
async def trader(gateway: Gateway) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    """A fresh account of its own (limits and exposure start empty) and its client."""
    account = new_account("risk")
    async with gateway.client(gateway.new_key(account)) as client:
        yield account, client


async def put_limits(admin: httpx.AsyncClient, account: str, **limits: Any) -> dict[str, Any]:
    response = await admin.put(f"/v1/risk/limits/{account}", json=limits)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def denied_with(client: httpx.AsyncClient, order: dict[str, Any], code: str) -> None:
    """The order is refused with ``code``, and stored as denied with it as the reason."""
    response = await client.post("/v1/orders", json=order)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == code, problem
    assert problem["order_status"] == "denied"
    stored = (await client.get(f"/v1/orders/{problem['order_id']}")).json()
    assert stored["status"] == "denied"  # refused by the gateway: rejected is the venue's
    assert stored["reject_reason"] == code


async def accepted(client: httpx.AsyncClient, order: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/v1/orders", json=order)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def account_state(client: httpx.AsyncClient, account: str) -> dict[str, Any]:
    response = await client.get("/v1/risk/state", params={"account": account})
    assert response.status_code == 200, response.text
    [state] = response.json()["accounts"]
    assert state["account"] == account
    result: dict[str, Any] = state
    return result


# -- limits: the API -------------------------------------------------------------------------
async def test_limits_default_then_admin_replaces_them_and_the_change_is_audited(
    gateway: Gateway, admin: httpx.AsyncClient, trader: tuple[str, httpx.AsyncClient]
) -> None:
    account, client = trader
    defaults = (await client.get(f"/v1/risk/limits/{account}")).json()
    assert defaults["duplicate_window_ms"] == 500
    assert defaults["max_position"] is None
    assert defaults["trading_state"] == "active"

    wanted = {
        "max_order_qty": "500",
        "max_order_notional": "100000",
        "max_position": "1000",
        "max_gross_notional": "250000",
        "max_open_orders": 20,
        "price_collar_pct": "5",
        "duplicate_window_ms": 250,
        "allowed_symbols": ["AAPL", "MSFT"],
        "blocked_symbols": None,
        "trading_state": "active",
        "symbols": {"AAPL": {"max_order_qty": "100", "max_position": None}},
    }
    stored = await put_limits(admin, account, **wanted)
    assert (await client.get(f"/v1/risk/limits/{account}")).json() == stored
    assert stored["max_open_orders"] == 20
    assert Decimal(stored["symbols"]["AAPL"]["max_order_qty"]) == 100

    [entry, *_] = (await admin.get("/v1/risk/audit", params={"limit": 5})).json()
    assert entry["action"] == "limits"
    assert entry["account"] == account
    assert entry["actor"].startswith("ops/admin/")
    assert entry["detail"]["max_open_orders"] == 20


async def test_only_admins_change_limits_and_only_admins_read_other_accounts(
    gateway: Gateway, alice: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    assert (await alice.put("/v1/risk/limits/alice", json={})).status_code == 403
    assert (await alice.get("/v1/risk/limits/bob")).status_code == 403
    assert (await alice.get("/v1/risk/state", params={"account": "bob"})).status_code == 403
    assert (await alice.get("/v1/risk/audit")).status_code == 403
    async with gateway.client(gateway.keys["viewer"]) as viewer:
        assert (await viewer.get("/v1/risk/limits/alice")).status_code == 200
        [own] = (await viewer.get("/v1/risk/state")).json()["accounts"]
        assert own["account"] == "alice"
    assert (await admin.get("/v1/risk/limits/alice")).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"max_order_qty": "-1"},
        {"max_order_qty": "NaN"},
        {"max_position": "1e30"},
        {"max_open_orders": 1.5},
        {"price_collar_pct": "0"},
        {"trading_state": "sleeping"},
        {"allowed_symbols": ["not a symbol"]},
        {"symbols": {"AAPL": {"max_order_qty": "1", "color": "red"}}},
        {"max_leverage": "3"},
        {"max_open_orders": True},  # not 1
        {"duplicate_window_ms": False},  # not 0
    ],
)
async def test_bad_limits_are_refused_and_change_nothing(
    admin: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    account = new_account("badlimits")
    before = await put_limits(admin, account, max_order_qty="7")
    response = await admin.put(f"/v1/risk/limits/{account}", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert (await admin.get(f"/v1/risk/limits/{account}")).json() == before


async def test_patch_changes_only_the_limits_it_names(
    admin: httpx.AsyncClient, trader: tuple[str, httpx.AsyncClient]
) -> None:
    account, client = trader
    await put_limits(
        admin,
        account,
        max_order_qty="5",
        max_position="10",
        symbols={"AAPL": {"max_position": "3"}, "MSFT": {"max_order_qty": "2"}},
    )
    patched = await admin.patch(f"/v1/risk/limits/{account}", json={"max_order_qty": "7"})
    assert patched.status_code == 200, patched.text
    stored = (await client.get(f"/v1/risk/limits/{account}")).json()
    assert stored == patched.json()
    assert (stored["max_order_qty"], stored["max_position"]) == ("7", "10")
    assert stored["symbols"]["AAPL"]["max_position"] == "3"

    # null: no limit; in symbols, null removes the override; other overrides stay.
    cleared = await admin.patch(
        f"/v1/risk/limits/{account}",
        json={"max_position": None, "symbols": {"AAPL": None, "TSLA": {"max_position": "4"}}},
    )
    assert cleared.status_code == 200, cleared.text
    after = cleared.json()
    assert (after["max_order_qty"], after["max_position"]) == ("7", None)
    assert set(after["symbols"]) == {"MSFT", "TSLA"}
    # Every worker applies it to the next order.
    await denied_with(client, market("TSLA", qty="5"), "risk.position_limit")
    await accepted(client, market("AAPL", qty="7"))
    [entry, *_] = (await admin.get("/v1/risk/audit", params={"limit": 1})).json()
    assert (entry["account"], entry["detail"]["max_position"]) == (account, None)


async def test_a_patch_of_an_account_without_limits_starts_from_the_defaults(
    admin: httpx.AsyncClient,
) -> None:
    account = new_account("patch-defaults")
    patched = (await admin.patch(f"/v1/risk/limits/{account}", json={"max_position": "9"})).json()
    assert (patched["max_position"], patched["duplicate_window_ms"]) == ("9", 500)


@pytest.mark.parametrize(
    "patch",
    [
        {"max_order_qty": "-1"},
        {"max_position": "1_0"},
        {"max_leverage": "3"},
        {"symbols": {"AAPL": {"color": "red"}}},
        {"trading_state": "sleeping"},
        {"max_open_orders": True},
    ],
)
async def test_a_bad_patch_is_refused_and_changes_nothing(
    admin: httpx.AsyncClient, alice: httpx.AsyncClient, patch: dict[str, Any]
) -> None:
    account = new_account("badpatch")
    before = await put_limits(admin, account, max_order_qty="7")
    audited = len((await admin.get("/v1/risk/audit", params={"limit": 1000})).json())
    response = await admin.patch(f"/v1/risk/limits/{account}", json=patch)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "request.invalid"
    assert (await admin.get(f"/v1/risk/limits/{account}")).json() == before
    assert len((await admin.get("/v1/risk/audit", params={"limit": 1000})).json()) == audited
    assert (await alice.patch(f"/v1/risk/limits/{account}", json={})).status_code == 403


@pytest.mark.parametrize("first", [True, False], ids=["first-changes", "later-changes"])
async def test_concurrent_patches_all_land(admin: httpx.AsyncClient, first: bool) -> None:
    """Each is read and written in one transaction: none overwrites another's change, the
    account's very first changes (no row yet to hold) included."""
    account = new_account("patch-race")
    if not first:
        await put_limits(admin, account, max_order_qty="7")
    symbols = ["AAPL", "MSFT", "AMZN", "GOOGL", "NVDA", "SPY", "QQQ", "META", "TSLA", "JPM"]
    answers = await asyncio.gather(
        *(
            admin.patch(
                f"/v1/risk/limits/{account}", json={"symbols": {s: {"max_position": str(n)}}}
            )
            for n, s in enumerate(symbols, start=1)
        )
    )
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    stored = (await admin.get(f"/v1/risk/limits/{account}")).json()
    assert {s: o["max_position"] for s, o in stored["symbols"].items()} == {
        s: str(n) for n, s in enumerate(symbols, start=1)
    }


async def test_concurrent_first_replacements_of_an_accounts_limits_all_succeed(
    admin: httpx.AsyncClient,
) -> None:
    account = new_account("put-race")
    answers = await asyncio.gather(
        *(
            admin.put(f"/v1/risk/limits/{account}", json={"max_order_qty": str(n)})
            for n in range(1, 11)
        )
    )
    assert [a.status_code for a in answers] == [200] * 10, [a.text for a in answers]
    stored = (await admin.get(f"/v1/risk/limits/{account}")).json()
    assert stored["max_order_qty"] in {str(n) for n in range(1, 11)}


# -- every check, with its code --------------------------------------------------------------
CHECKS = [
    # (limits, an order they refuse, its code, an order they let through)
    ({"allowed_symbols": ["MSFT"]}, market("AAPL"), "risk.symbol_not_allowed", market("MSFT")),
    ({"blocked_symbols": ["AAPL"]}, market("AAPL"), "risk.symbol_blocked", market("MSFT")),
    ({"max_order_qty": "10"}, market(qty="11"), "risk.max_order_qty", market(qty="10")),
    (
        {"max_order_qty": "100", "symbols": {"AAPL": {"max_order_qty": "5"}}},
        market(qty="6"),
        "risk.max_order_qty",
        market("MSFT", qty="6"),
    ),
    ({"max_order_notional": "1000"}, market(qty="5"), "risk.max_order_notional", market(qty="4")),
    (
        {"price_collar_pct": "5"},
        limit("200", symbol="AAPL"),
        "risk.price_collar",
        limit("225", symbol="AAPL"),
    ),
    ({"max_position": "10"}, market(qty="11"), "risk.position_limit", market(qty="10")),
    (
        {"max_position": "10"},
        market(side="sell", qty="11"),
        "risk.position_limit",
        market(side="sell", qty="10"),
    ),
    (
        {"max_position": "100", "symbols": {"AAPL": {"max_position": "3"}}},
        market(qty="4"),
        "risk.position_limit",
        market(qty="3"),
    ),
    (
        {"max_gross_notional": "1000"},
        market(qty="5"),
        "risk.gross_notional_limit",
        market(qty="4"),
    ),
    ({"max_open_orders": 0}, market(), "risk.max_open_orders", None),
    ({"trading_state": "halted"}, market(), "risk.trading_halted", None),
    ({"trading_state": "reduce_only"}, market(), "risk.reduce_only", None),
]


@pytest.mark.parametrize(
    ("limits", "refused", "code", "allowed"), CHECKS, ids=[c[2] for c in CHECKS]
)
async def test_each_check_rejects_with_its_code_and_stores_it_on_the_order(
    gateway: Gateway,
    admin: httpx.AsyncClient,
    trader: tuple[str, httpx.AsyncClient],
    limits: dict[str, Any],
    refused: dict[str, Any],
    code: str,
    allowed: dict[str, Any] | None,
) -> None:
    account, client = trader
    await put_limits(admin, account, **limits)
    await denied_with(client, {**refused, "client_order_id": coid()}, code)
    if allowed is not None:
        await accepted(client, {**allowed, "client_order_id": coid()})


async def test_risk_decisions_are_counted_by_result_in_metrics(
    gateway: Gateway, admin: httpx.AsyncClient, trader: tuple[str, httpx.AsyncClient]
) -> None:
    account, client = trader

    async def count(result: str) -> float:
        text = (await client.get("/metrics")).text
        line = f'ordergate_risk_decisions_total{{result="{result}"}} '
        found = [float(row.split()[-1]) for row in text.splitlines() if row.startswith(line)]
        return sum(found)

    before = await count("risk.max_open_orders"), await count("accepted")
    await accepted(client, market("XOM", qty="1"))
    await put_limits(admin, account, max_open_orders=0)
    await denied_with(client, market("XOM", qty="2"), "risk.max_open_orders")
    assert await count("risk.max_open_orders") == before[0] + 1
    assert await count("accepted") >= before[1] + 1  # other tests' orders may count too


async def test_a_rejection_is_replayed_for_its_idempotency_key(
    admin: httpx.AsyncClient, trader: tuple[str, httpx.AsyncClient]
) -> None:
    account, client = trader
    await put_limits(admin, account, max_order_qty="1")
    order = market(qty="2")
    first = await client.post("/v1/orders", json=order)
    again = await client.post("/v1/orders", json=order)
    assert first.status_code == again.status_code == 422
    assert first.content == again.content


async def test_open_orders_count_toward_the_position_limit_until_canceled(
    admin: httpx.AsyncClient, trader: tuple[str, httpx.AsyncClient]
) -> None:
    account, client = trader
    await put_limits(admin, account, max_position="10")
    resting = await accepted(client, limit("1.00", symbol="AAPL", qty="6"))  # rests: far below
    await denied_with(client, limit("1.00", symbol="AAPL", qty="5"), "risk.position_limit")
    refused = (await client.post("/v1/orders", json=limit("1.00", symbol="AAPL", qty="4.5"))).json()
    # The quantities as they were sent, not as the risk state scales them.
    assert refused["detail"].startswith("AAPL position would reach 10.5 "), refused
    assert refused["detail"].endswith("limit 10"), refused
    assert (await client.delete(f"/v1/orders/{resting['id']}")).status_code == 200
    await accepted(client, limit("1.00", symbol="AAPL", qty="5"))


async def test_an_expired_day_order_gives_its_reservation_back(
    admin: httpx.AsyncClient, trader: tuple[str, httpx.AsyncClient]
) -> None:
    account, client = trader
    await put_limits(admin, account, max_position="10")
    resting = await accepted(client, limit("1.00", symbol="GOOGL", qty="10"))
    await denied_with(client, limit("1.00", symbol="GOOGL", qty="1"), "risk.position_limit")
    assert (await admin.post("/v1/sim/session-close")).status_code == 200
    await eventually_status(client, resting["id"], "expired")

    async def released() -> bool:
        return (await account_state(client, account))["reservations"] == []

    await wait_for(released)
    await accepted(client, limit("1.00", symbol="GOOGL", qty="10", tif="gtc"))


async def test_the_same_order_again_within_the_window_is_a_duplicate_unless_deliberate(
    admin: httpx.AsyncClient, trader: tuple[str, httpx.AsyncClient]
) -> None:
    account, client = trader
    await put_limits(admin, account, duplicate_window_ms=300)
    order = {"symbol": "MSFT", "side": "buy", "qty": "3", "type": "market"}
    await accepted(client, {**order, "client_order_id": coid()})
    await denied_with(client, {**order, "client_order_id": coid()}, "risk.duplicate_order")
    await accepted(client, {**order, "client_order_id": coid(), "allow_duplicate": True})
    await accepted(client, {**order, "qty": "4", "client_order_id": coid()})  # not the same
    await asyncio.sleep(0.4)  # the window has passed
    await accepted(client, {**order, "client_order_id": coid()})


async def test_fills_turn_reservations_into_positions(
    trader: tuple[str, httpx.AsyncClient],
) -> None:
    account, client = trader
    await accepted(client, market("NVDA", qty="7"))
    resting = await accepted(client, limit("1.00", symbol="NVDA", side="buy", qty="2"))

    async def settled() -> bool:
        state = await account_state(client, account)
        return bool(state["exposure"]) and Decimal(state["exposure"][0]["position"]) == 7

    await wait_for(settled)
    state = await account_state(client, account)
    [nvda] = state["exposure"]
    assert Decimal(nvda["open_buy"]) == 2
    assert Decimal(nvda["open_sell"]) == 0
    # Worst case: every open buy fills too, at the reference price of 140.
    assert Decimal(state["gross_notional"]) == 9 * 140
    assert [r["client_order_id"] for r in state["reservations"]] == [resting["client_order_id"]]


async def test_a_limit_change_reaches_every_worker_within_a_second(
    gateway: Gateway, admin: httpx.AsyncClient
) -> None:
    account = new_account("limits-push")
    key = gateway.new_key(account)
    # Several clients: connections land on both uvicorn workers.
    clients = [gateway.client(key) for _ in range(6)]
    try:
        for client in clients:  # every worker caches the (default) limits
            await accepted(client, market("SPY", qty="1", allow_duplicate=True))
        await put_limits(admin, account, max_order_qty="5", max_position="12")
        # Stateful limits live in Redis: the very next order anywhere sees them.
        results = await asyncio.gather(
            *(c.post("/v1/orders", json=market("SPY", qty="3")) for c in clients)
        )
        assert [r.status_code for r in results].count(201) == 2  # 6 held + 2 * 3 = 12
        # In-process limits follow the pub/sub notice, or re-read within a second.

        async def everywhere_refused() -> bool:
            answers = await asyncio.gather(
                *(c.post("/v1/orders", json=market("QQQ", qty="6")) for c in clients)
            )
            return all(a.json().get("code") == "risk.max_order_qty" for a in answers)

        await wait_for(everywhere_refused, within=1.5)
    finally:
        for client in clients:
            await client.aclose()


# -- concurrency -----------------------------------------------------------------------------
async def test_position_limit_holds_for_200_concurrent_orders_over_two_workers(
    gateway: Gateway, admin: httpx.AsyncClient
) -> None:
    assert gateway.workers == 2
    account = new_account("race")
    key = gateway.new_key(account)
    await put_limits(admin, account, max_position="100")
    assert gateway.redis_url is not None
    redis = syncredis.Redis.from_url(gateway.redis_url)
    keys = RiskKeys(account)
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        # A thread of its own: on the test's event loop, busy sending the 200 orders, it got
        # a handful of turns in all once the gateway got fast.
        while not done.is_set():
            position, open_buy = redis.hmget(keys.exposure, ["pos:AAPL", "buy:AAPL"])
            samples.append(int(position or 0) + int(open_buy or 0))

    clients = [gateway.client(key) for _ in range(4)]
    redis.ping()  # connected before the race, so the sampler samples during it
    sampler = threading.Thread(target=sample)
    try:
        sampler.start()
        responses = await asyncio.gather(
            *(clients[i % 4].post("/v1/orders", json=market("AAPL", qty="1")) for i in range(200))
        )
    finally:
        done.set()
        sampler.join()
        for client in clients:
            await client.aclose()
        redis.close()

    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 100, statuses
    others = [r.text for r in responses if r.status_code not in (201, 422)]
    assert statuses.count(422) == 100, others
    assert {r.json()["code"] for r in responses if r.status_code == 422} == {"risk.position_limit"}
    assert len(samples) > 10, len(samples)
    assert max(samples) <= 100 * SCALE  # reserved + filled, at every sampled moment
    async with gateway.client(key) as client:

        async def filled() -> bool:
            positions = (await client.get("/v1/positions")).json()
            return [(p["symbol"], Decimal(p["qty"])) for p in positions] == [("AAPL", 100)]

        await wait_for(filled, within=10)


# -- kill switch -----------------------------------------------------------------------------
async def test_account_kill_switch_cancels_open_orders_and_lets_only_reductions_through(
    admin: httpx.AsyncClient, trader: tuple[str, httpx.AsyncClient]
) -> None:
    account, client = trader
    long = await accepted(client, market("JPM", qty="10"))
    await eventually_status(client, long["id"], "filled")
    resting = await accepted(client, limit("1.00", symbol="JPM", qty="1"))

    response = await admin.post(
        "/v1/risk/kill-switch",
        json={"scope": "account", "account": account, "active": True, "cancel_open": True},
    )
    assert response.status_code == 200, response.text
    outcome = response.json()
    assert outcome["active"] is True
    assert outcome["canceled_orders"] == 1
    assert outcome["by"].startswith("ops/admin/")
    await eventually_status(client, resting["id"], "canceled")

    await denied_with(client, market("JPM", qty="1"), "risk.kill_switch")
    await denied_with(client, market("XOM", side="sell", qty="1"), "risk.kill_switch")
    await accepted(client, market("JPM", side="sell", qty="4"))  # reduces the long
    state = await account_state(admin, account)
    assert state["kill_switch"] is True

    [entry, *_] = (await admin.get("/v1/risk/audit")).json()
    assert (entry["action"], entry["scope"], entry["account"]) == (
        "kill_switch",
        "account",
        account,
    )
    assert entry["detail"] == {"active": True, "cancel_open": True}

    off = {"scope": "account", "account": account, "active": False, "cancel_open": False}
    assert (await admin.post("/v1/risk/kill-switch", json=off)).status_code == 200
    await accepted(client, market("JPM", qty="1"))


async def test_global_kill_switch_stops_every_account_on_every_worker(
    gateway: Gateway, admin: httpx.AsyncClient
) -> None:
    accounts = [new_account("global-kill") for _ in range(2)]
    clients = [gateway.client(gateway.new_key(a)) for a in accounts for _ in range(2)]
    try:
        for client in clients:
            await accepted(client, market("IWM", qty="1", allow_duplicate=True))
        on = {"scope": "global", "active": True, "cancel_open": False}
        assert (await admin.post("/v1/risk/kill-switch", json=on)).status_code == 200
        try:
            for client in clients:
                await denied_with(client, market("IWM", qty="1"), "risk.kill_switch")
            state = (await admin.get("/v1/risk/state")).json()
            assert any(k["scope"] == "global" and k["active"] for k in state["kill_switches"])
        finally:
            off = {"scope": "global", "active": False, "cancel_open": False}
            assert (await admin.post("/v1/risk/kill-switch", json=off)).status_code == 200
        for client in clients:
            await accepted(client, market("IWM", qty="1", allow_duplicate=True))
    finally:
        for client in clients:
            await client.aclose()


@pytest.mark.parametrize(
    "body",
    [
        {"scope": "account", "active": True},
        {"scope": "global", "account": "alice", "active": True},
        {"scope": "planet", "active": True},
        {"scope": "global"},
        {"scope": "global", "active": 1},  # JSON's true is not 1
    ],
)
async def test_bad_kill_switch_requests_are_refused(
    admin: httpx.AsyncClient, alice: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await admin.post("/v1/risk/kill-switch", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    forbidden = await alice.post("/v1/risk/kill-switch", json={"scope": "global", "active": True})
    assert forbidden.status_code == 403


# -- fail closed, recover, rebuild -----------------------------------------------------------
async def ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


async def timed_order(
    client: httpx.AsyncClient, keyed: bool
) -> tuple[tuple[int, str | None], str | None, float]:
    """((status, code), client_order_id or None, seconds) of one one-share market order."""
    order = market("AAPL", qty="1", allow_duplicate=True)
    if not keyed:
        del order["client_order_id"]
    started = time.perf_counter()
    response = await client.post("/v1/orders", json=order)
    elapsed = time.perf_counter() - started
    code = response.json().get("code") if response.status_code >= 400 else None
    return (response.status_code, code), order.get("client_order_id"), elapsed


async def test_a_hung_or_stopped_redis_fails_closed_fast_and_an_empty_one_is_rebuilt(
    database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    server = EmbeddedRedis(directory=tmp_path / "redis", port=free_port()).start()
    gateway = launch_gateway(
        tmp_path / "gw",
        database_factory.create("sqlite"),
        server.url,
        workers=2,
        extra_env={"ORDERGATE_RISK__REDIS_TIMEOUT_MS": str(REDIS_TIMEOUT_S * 1000)},
    )
    try:
        account = new_account("outage")
        async with (
            gateway.client(gateway.new_key(account)) as client,
            gateway.client(gateway.new_key("ops", "admin")) as admin,
        ):
            await put_limits(admin, account, max_position="20")
            long = await accepted(client, market("AAPL", qty="10"))
            await eventually_status(client, long["id"], "filled")
            resting = await accepted(client, limit("1.00", symbol="AAPL", qty="5"))

            # Hung: the server holds every connection open and answers nothing.
            assert server.pid is not None
            os.kill(server.pid, signal.SIGSTOP)
            try:
                hung = [await timed_order(client, keyed) for keyed in (True, False) * 3]
            finally:
                os.kill(server.pid, signal.SIGCONT)
            assert all(status == (503, "risk.unavailable") for status, _, _ in hung), hung
            # Refused after the Redis budget, with a loaded machine's slack; never the
            # client's 15 s.
            assert statistics.median(t for _, _, t in hung) < REDIS_TIMEOUT_S + 1.0, hung
            refused = [coid for _, coid, _ in hung if coid is not None]
            # Back: what the refused orders' scripts reserved when Redis ran them late is
            # given up (by each worker, in the background), then orders are decided again
            # against the same state (position 10, open 5).
            await wait_for(lambda: ready(client), within=10)

            async def only_resting_reserved() -> bool:
                state = await account_state(client, account)
                held = [r["client_order_id"] for r in state["reservations"]]
                return held == [resting["client_order_id"]]

            await wait_for(only_resting_reserved, within=10)
            one_more = await accepted(client, market("AAPL", qty="1", allow_duplicate=True))
            await eventually_status(client, one_more["id"], "filled")

            server.stop()
            down = [await timed_order(client, keyed) for keyed in (True, False) * 5]
            assert all(status == (503, "risk.unavailable") for status, _, _ in down), down
            assert statistics.median(t for _, _, t in down) < REDIS_TIMEOUT_S + 1.0, down
            refused += [coid for _, coid, _ in down if coid is not None]

            server.start()  # same port, and empty: nothing was persisted
            await wait_for(lambda: ready(client), within=10)

            async def decided() -> bool:
                response = await client.post(
                    "/v1/orders", json=limit("1.00", symbol="AAPL", qty="6")
                )
                if response.status_code == 503:
                    return False
                # Rebuilt from the database: position 11 + open 5 + 6 > 20.
                assert response.status_code == 422, response.text
                assert response.json()["code"] == "risk.position_limit"
                return True

            await wait_for(decided, within=10)
            await accepted(client, limit("1.00", symbol="AAPL", qty="4"))
            state = await account_state(client, account)
            [aapl] = state["exposure"]
            assert (Decimal(aapl["position"]), Decimal(aapl["open_buy"])) == (11, 9)
            assert resting["client_order_id"] in {
                r["client_order_id"] for r in state["reservations"]
            }
            # Nothing refused during the outage reached the order log (or the broker).
            listing = (await client.get("/v1/orders", params={"limit": 500})).json()["items"]
            assert not {o["client_order_id"] for o in listing} & set(refused)
            # long, resting, the one after the hang, the rebuilt-limit reject, the last one
            assert len(listing) == 5
    finally:
        gateway.stop()
        server.stop()


async def test_the_development_profile_refuses_a_fat_finger_order(fresh: Launch) -> None:
    """What `make run` serves with: accounts without limits of their own get a desk's."""
    gateway = fresh(
        ORDERGATE_CONFIG=str(REPO / "config" / "development.yaml"),
        ORDERGATE_BROKER_TIMEOUT_MS="1000",  # within the tests' reconcile_after_s
    )
    async with gateway.client(gateway.new_key("fat-finger")) as client:
        await denied_with(client, market(qty="1000000000"), "risk.max_order_qty")
        await denied_with(client, market(qty="5000"), "risk.max_order_notional")  # 1.15M
        await accepted(client, market(qty="100"))
