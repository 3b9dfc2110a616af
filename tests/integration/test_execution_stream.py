"""The execution stream over a real WebSocket: the shared gateway (two workers, the applier
in a process of its own, real Redis, the real database)."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

import httpx
import pytest
import websockets

from tests.conftest import Gateway, wait_for
from tests.helpers.database import key_id_of
from tests.helpers.orders import limit, market
from tests.helpers.stream import Subscriber, assert_in_order_once, log_history, stream_url


def new_account(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


async def place(client: httpx.AsyncClient, orders: list[dict[str, Any]], at_once: int = 16) -> None:
    """Place every order, ``at_once`` in flight at a time; each must be accepted."""
    gate = asyncio.Semaphore(at_once)

    async def one(order: dict[str, Any]) -> None:
        async with gate:
            placed = await client.post("/v1/orders", json=order)
            assert placed.status_code == 201, placed.text

    await asyncio.gather(*(one(order) for order in orders))


def fills(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in reports if r["event"] == "fill"]


async def test_a_subscriber_that_reconnects_midway_gets_all_500_fills_once_and_in_order(
    gateway: Gateway,
) -> None:
    key = gateway.new_key(new_account("resume"))
    first = Subscriber(gateway, key)
    await first.open(since=0)

    async def away_for_two_seconds_midway() -> Subscriber:
        await first.until_reports(150)
        await first.close()
        await asyncio.sleep(2)  # fills go on while it is away
        resumed = Subscriber(gateway, key)
        await resumed.open(since=first.last_seq)
        return resumed

    async with gateway.client(key) as client:
        _, resumed = await asyncio.gather(
            place(client, [market("AAPL") for _ in range(500)]), away_for_two_seconds_midway()
        )

    async def all_filled() -> bool:
        return len(fills(first.reports + resumed.reports)) >= 500

    await wait_for(all_filled, within=60)
    await asyncio.sleep(0.5)  # nothing more, in particular no repeat
    await resumed.close()
    reports = first.reports + resumed.reports
    assert_in_order_once(reports)
    assert len({r["exec_id"] for r in fills(reports)}) == 500
    # Every order's story, whole: created, acknowledged, filled.
    assert len(reports) == 1500


async def test_reports_streamed_live_are_those_the_order_log_gives_back(gateway: Gateway) -> None:
    key = gateway.new_key(new_account("history"))
    subscriber = Subscriber(gateway, key)
    await subscriber.open()
    async with gateway.client(key) as client:
        await place(client, [market("AAPL", qty="3") for _ in range(5)])
        resting = (await client.post("/v1/orders", json=limit("1.00"))).json()
        assert (await client.delete(f"/v1/orders/{resting['id']}")).status_code in (200, 202)
        await subscriber.until_reports(5 * 3 + 4)
        history = (await client.get("/v1/executions", params={"since": 0, "limit": 1000})).json()
    await subscriber.close()
    assert history["items"] == subscriber.reports  # published from memory, rebuilt from the log
    assert history["next_since"] == subscriber.last_seq
    fill = fills(subscriber.reports)[0]
    assert fill["last_qty"] == "3"
    assert fill["cum_qty"] == "3"
    assert fill["leaves_qty"] == "0"
    assert fill["order"]["status"] == "filled"
    assert fill["position_qty"] is not None
    events = [r["event"] for r in subscriber.reports if r["order"]["id"] == resting["id"]]
    assert events == ["pending_new", "new", "pending_cancel", "canceled"]


async def test_an_account_sees_none_of_another_accounts_reports_and_cannot_ask_for_them(
    gateway: Gateway,
) -> None:
    a, b = new_account("iso-a"), new_account("iso-b")
    key_a, key_b = gateway.new_key(a), gateway.new_key(b)
    watcher_a, watcher_b = Subscriber(gateway, key_a), Subscriber(gateway, key_b)
    await watcher_a.open()
    await watcher_b.open()
    async with gateway.client(key_b) as client:
        # 1,000 reports. Eight at a time: on PostgreSQL one account's commits now wait for
        # each other (the numbering's row lock), and sixteen once outwaited the storage
        # timeout on a loaded machine (docs/performance.md, the execution stream).
        await place(client, [limit("1.00") for _ in range(500)], at_once=8)
    await watcher_b.until_reports(1000)
    await asyncio.sleep(0.5)
    assert watcher_a.reports == []
    assert {r["account"] for r in watcher_b.reports} == {b}
    await watcher_a.close()
    await watcher_b.close()

    async with websockets.connect(
        stream_url(gateway), additional_headers={"Authorization": f"Bearer {key_a}"}
    ) as ws:
        await ws.recv()  # authenticated
        for request in (
            {"op": "subscribe", "channels": ["executions"], "accounts": [b]},
            {"op": "subscribe", "channels": ["executions"], "accounts": [a, b]},
        ):
            await ws.send(json.dumps(request))
            assert json.loads(await ws.recv())[0]["code"] == "auth.forbidden"
    async with gateway.client(key_a) as client:
        other = await client.get("/v1/executions", params={"account": b})
    assert other.status_code == 403


async def test_reports_reach_subscribers_on_every_worker_from_every_process(
    gateway: Gateway,
) -> None:
    """Fills are committed by the applier, a process with no subscribers; the orders are
    placed over new connections, which the two workers share between them."""
    key = gateway.new_key(new_account("across"))
    subscribers = [Subscriber(gateway, key) for _ in range(6)]
    for subscriber in subscribers:
        await subscriber.open()
    for _ in range(6):
        async with gateway.client(key) as client:  # a connection of its own each
            await place(client, [market("AAPL")])
    for subscriber in subscribers:
        await subscriber.until_reports(18)
        assert_in_order_once(subscriber.reports)
        assert len(fills(subscriber.reports)) == 6
        await subscriber.close()


async def test_an_admin_follows_every_account_or_the_ones_it_names(gateway: Gateway) -> None:
    accounts = [new_account("all-a"), new_account("all-b")]
    keys = [gateway.new_key(a) for a in accounts]
    everyone = Subscriber(gateway, gateway.keys["admin"])
    named = Subscriber(gateway, gateway.keys["admin"])
    await everyone.open(channels=("executions", "orders"))
    await named.open(accounts=[accounts[1]], since={accounts[1]: 0})
    for key in keys:
        async with gateway.client(key) as client:
            await place(client, [market("AAPL") for _ in range(3)])
    await named.until_reports(9)

    async def both_seen() -> bool:
        mine = [r for r in everyone.reports if r["account"] in accounts]
        return len(mine) == 18

    await wait_for(both_seen, within=10)
    for account in accounts:
        own = [r for r in everyone.reports if r["account"] == account]
        assert_in_order_once(own)
        orders = [f for f in everyone.frames if f["type"] == "order" and f["account"] == account]
        assert [f["seq"] for f in orders] == [r["seq"] for r in own]
    assert {r["account"] for r in named.reports} == {accounts[1]}
    await everyone.close()
    await named.close()


async def test_a_since_the_gateway_never_gave_asks_for_a_resync(gateway: Gateway) -> None:
    key = gateway.new_key(new_account("resync"))
    async with gateway.client(key) as client:
        await place(client, [limit("1.00")])

    async def numbered() -> bool:  # on PostgreSQL, just after their commit
        return len(await log_history(gateway, key)) == 2

    await wait_for(numbered)
    subscriber = Subscriber(gateway, key)
    subscribed = await subscriber.open(since=999)
    assert list(subscribed["seq"].values()) == [2]

    async def told() -> bool:
        return any(f["type"] == "resync_required" for f in subscriber.frames)

    await wait_for(told)
    notice = next(f for f in subscriber.frames if f["type"] == "resync_required")
    assert notice["since"] == 999
    assert notice["newest"] == 2
    await subscriber.close()


async def test_authentication_by_first_message_and_every_way_it_fails(gateway: Gateway) -> None:
    key = gateway.new_key(new_account("auth"))
    url = stream_url(gateway)
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"op": "auth", "key": key}))
        assert json.loads(await ws.recv())[0]["type"] == "authenticated"
    for first in (None, {"op": "auth", "key": "og_nope"}, {"op": "subscribe"}, "not json"):
        async with websockets.connect(url) as ws:
            if first is not None:
                await ws.send(first if isinstance(first, str) else json.dumps(first))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)  # no data before the close
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1008
    async with websockets.connect(
        url, additional_headers={"Authorization": "Bearer og_unknown"}
    ) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1008
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(url, origin="https://evil.example")  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403


async def test_bad_frames_get_an_error_or_a_close_and_the_stream_goes_on(gateway: Gateway) -> None:
    key = gateway.new_key(new_account("frames"))
    url = stream_url(gateway)
    headers = {"Authorization": f"Bearer {key}"}
    async with websockets.connect(url, additional_headers=headers) as ws:
        await ws.recv()
        for frame, code in (
            ("{not json", "request.invalid"),
            ("[1, 2]", "request.invalid"),
            (json.dumps({"op": "dance"}), "request.invalid"),
            (json.dumps({"op": "subscribe", "channels": ["gossip"]}), "request.invalid"),
            (
                json.dumps({"op": "subscribe", "channels": ["executions"], "since": -1}),
                "request.invalid",
            ),
            (
                json.dumps({"op": "subscribe", "channels": ["executions"], "since": 2**64}),
                "request.invalid",
            ),
            (
                json.dumps({"op": "subscribe", "channels": ["executions"], "x": 1}),
                "request.invalid",
            ),
            (json.dumps({"op": "auth", "key": key}), "request.invalid"),
        ):
            await ws.send(frame)
            answer = json.loads(await ws.recv())[0]
            assert (answer["type"], answer["code"]) == ("error", code), frame
        await ws.send(json.dumps({"op": "ping"}))
        assert json.loads(await ws.recv()) == [{"type": "pong"}]
        # Nothing above subscribed: a subscription is still possible, and works.
        await ws.send(json.dumps({"op": "subscribe", "channels": ["executions"]}))
        assert json.loads(await ws.recv())[0]["type"] == "subscribed"
    async with websockets.connect(url, additional_headers=headers) as ws:
        await ws.recv()
        await ws.send(b"\x00binary")
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1003
    async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
        await ws.recv()
        await ws.send("x" * (64 * 1024 + 1))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009
    subscriber = Subscriber(gateway, key)  # the server is none the worse
    await subscriber.open()
    async with gateway.client(key) as client:
        await place(client, [limit("1.00")])
    await subscriber.until_reports(2)
    await subscriber.close()


async def test_revoking_a_key_closes_its_sockets_within_seconds(gateway: Gateway) -> None:
    key = gateway.new_key(new_account("revoked"))
    subscriber = Subscriber(gateway, key)
    await subscriber.open()
    gateway.run_cli("keys", "revoke", "--id", await key_id_of(gateway.database_url, key))
    await subscriber.until_closed(within=6)
    assert subscriber.close_code == 1008


async def _join_during_a_burst(gateway: Gateway, key: str, client: httpx.AsyncClient) -> None:
    joiners = [Subscriber(gateway, key) for _ in range(4)]

    async def join(joiner: Subscriber, after_s: float) -> int:
        await asyncio.sleep(after_s)
        subscribed = await joiner.open()
        return int(next(iter(subscribed["seq"].values())))

    _, *starts = await asyncio.gather(
        place(client, [market("AAPL") for _ in range(10)]),
        *(join(joiner, 0.004 * n) for n, joiner in enumerate(joiners)),
    )

    async def everyone_has_all_since_joining() -> bool:
        page = await client.get("/v1/executions", params={"since": 0, "limit": 1000})
        newest = page.json()["next_since"]
        return all(
            [r["seq"] for r in joiner.reports] == list(range(start + 1, newest + 1))
            for joiner, start in zip(joiners, starts, strict=True)
        )

    await wait_for(everyone_has_all_since_joining, within=3)  # heartbeats: 15 s apart
    for joiner in joiners:
        await joiner.close()


async def test_subscribing_while_reports_stream_in_misses_none_at_the_seam(
    gateway: Gateway,
) -> None:
    """Subscribers join (no ``since``) while a burst is committed and published, with
    others of the account already connected: from their ``subscribed`` numbers on, each
    gets every later report at once, not at the next heartbeat."""
    key = gateway.new_key(new_account("seam"))
    residents = [Subscriber(gateway, key) for _ in range(4)]
    for resident in residents:
        await resident.open()
    async with gateway.client(key) as client:
        for _ in range(8):
            await _join_during_a_burst(gateway, key, client)
    for resident in residents:
        assert_in_order_once(resident.reports)
        await resident.close()


async def test_a_subscription_names_at_least_one_channel_and_valid_accounts(
    gateway: Gateway,
) -> None:
    url = stream_url(gateway)
    async with websockets.connect(
        url, additional_headers={"Authorization": f"Bearer {gateway.keys['admin']}"}
    ) as ws:
        await ws.recv()
        for request in (
            {"op": "subscribe", "channels": []},
            {"op": "subscribe", "channels": ["executions"], "accounts": []},
            {"op": "subscribe", "channels": ["executions"], "accounts": ["a{b}c"]},
            {"op": "subscribe", "channels": ["executions"], "since": {"": 1}},
            {"op": "subscribe", "channels": ["executions"], "accounts": ["x"] * 1001},
        ):
            await ws.send(json.dumps(request))
            assert json.loads(await ws.recv())[0]["code"] == "request.invalid", request
        await ws.send(json.dumps({"op": "subscribe", "channels": ["executions"]}))
        assert json.loads(await ws.recv())[0]["type"] == "subscribed"
