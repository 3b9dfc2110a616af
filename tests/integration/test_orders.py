"""The order path against a real gateway (2 uvicorn workers), real Redis, real database."""

from __future__ import annotations

import asyncio
import re
from decimal import Decimal
from typing import Any

import httpx

from tests.conftest import Gateway
from tests.helpers.orders import coid, eventually_status, limit, market, order_events, order_status


async def test_market_order_is_acknowledged_then_filled_and_positioned(gateway: Gateway) -> None:
    async with gateway.client(gateway.new_key("fills-acct")) as client:
        response = await client.post("/v1/orders", json=market("NVDA", qty="7"))
        assert response.status_code == 201, response.text
        ack = response.json()
        assert ack["status"] == "new"
        assert ack["account"] == "fills-acct"
        assert ack["qty"] == "7"
        assert set(ack) == {
            "id",
            "client_order_id",
            "account",
            "symbol",
            "side",
            "qty",
            "type",
            "limit_price",
            "time_in_force",
            "status",
            "filled_qty",
            "avg_fill_price",
            "created_at",
            "updated_at",
            "reject_reason",
        }
        filled = await eventually_status(client, ack["id"], "filled")
        assert filled["filled_qty"] == "7"
        assert Decimal(filled["avg_fill_price"]) == Decimal("140")
        positions = (await client.get("/v1/positions")).json()
        assert positions == [
            {"symbol": "NVDA", "qty": "7", "avg_price": "140", "realized_pnl": "0"}
        ]
        account = (await client.get("/v1/account")).json()
        assert account["account"] == "fills-acct"
        assert account["positions"] == 1


async def test_order_larger_than_top_of_book_fills_in_parts(gateway: Gateway) -> None:
    async with gateway.client(gateway.new_key("partial-acct")) as client:
        ack = (await client.post("/v1/orders", json=market("SPY", qty="250"))).json()
        # Top of book is 100 in the tests: 100 now, then 100 and 50 on later matches.
        filled = await eventually_status(client, ack["id"], "filled")
        assert filled["filled_qty"] == "250"
        positions = (await client.get("/v1/positions")).json()
        assert positions[0]["qty"] == "250"


async def test_limit_order_rests_until_the_price_crosses_it(
    gateway: Gateway, admin: httpx.AsyncClient
) -> None:
    async with gateway.client(gateway.new_key("limit-acct")) as client:
        ack = (await client.post("/v1/orders", json=limit("50.00", symbol="XOM"))).json()
        await asyncio.sleep(0.4)  # several match cycles: it must not fill above its limit
        assert (await order_status(client, ack["id"]))["status"] == "new"
        moved = await admin.post("/v1/sim/prices", json={"symbol": "XOM", "price": "49.5"})
        assert moved.status_code == 200, moved.text
        filled = await eventually_status(client, ack["id"], "filled")
        assert Decimal(filled["avg_fill_price"]) == Decimal("49.5")
        await admin.post("/v1/sim/prices", json={"symbol": "XOM", "price": "115"})


async def test_ioc_and_fok_never_rest(gateway: Gateway) -> None:
    async with gateway.client(gateway.new_key("tif-acct")) as client:
        ioc = (await client.post("/v1/orders", json=limit("1", symbol="JPM", tif="ioc"))).json()
        await eventually_status(client, ioc["id"], "canceled")
        fok_big = (
            await client.post("/v1/orders", json=limit("1000", symbol="JPM", qty="150", tif="fok"))
        ).json()
        canceled = await eventually_status(client, fok_big["id"], "canceled")
        assert canceled["filled_qty"] == "0"
        fok_small = (
            await client.post("/v1/orders", json=limit("1000", symbol="JPM", qty="60", tif="fok"))
        ).json()
        await eventually_status(client, fok_small["id"], "filled")


async def test_cancel_a_resting_order_then_cancel_again_is_409(gateway: Gateway) -> None:
    async with gateway.client(gateway.new_key("cancel-acct")) as client:
        ack = (await client.post("/v1/orders", json=limit("10", symbol="AMZN"))).json()
        response = await client.delete(f"/v1/orders/{ack['id']}")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "canceled"
        again = await client.delete(f"/v1/orders/{ack['id']}")
        assert again.status_code == 409
        assert again.headers["content-type"] == "application/problem+json"
        assert again.json()["code"] == "order.not_cancelable"


async def test_cancel_all_cancels_every_open_order_of_the_account_only(gateway: Gateway) -> None:
    async with (
        gateway.client(gateway.new_key("bulk-acct")) as client,
        gateway.client(gateway.new_key("bystander")) as other,
    ):
        mine = [
            (await client.post("/v1/orders", json=limit("5", symbol="TSLA", qty=str(n)))).json()[
                "id"
            ]
            for n in (1, 2, 3)  # distinct: the same order thrice would be a duplicate
        ]
        theirs = (await other.post("/v1/orders", json=limit("5", symbol="TSLA"))).json()["id"]
        response = await client.delete("/v1/orders")
        assert response.status_code == 200, response.text
        assert sorted(o["id"] for o in response.json()) == sorted(mine)
        for order_id in mine:
            assert (await order_status(client, order_id))["status"] == "canceled"
        assert (await order_status(other, theirs))["status"] == "new"


async def test_session_close_expires_resting_day_orders_but_not_gtc(
    gateway: Gateway, admin: httpx.AsyncClient
) -> None:
    async with gateway.client(gateway.new_key("expiry-acct")) as client:
        day = (await client.post("/v1/orders", json=limit("3", symbol="IWM"))).json()
        gtc = (await client.post("/v1/orders", json=limit("3", symbol="IWM", tif="gtc"))).json()
        response = await admin.post("/v1/sim/session-close")
        assert response.status_code == 200
        assert response.json()["expired_orders"] >= 1
        await eventually_status(client, day["id"], "expired")
        assert (await order_status(client, gtc["id"]))["status"] == "new"


async def test_list_orders_is_newest_first_with_cursor_and_filters(gateway: Gateway) -> None:
    async with gateway.client(gateway.new_key("list-acct")) as client:
        ids = [
            (await client.post("/v1/orders", json=limit("2", symbol="META"))).json()["id"]
            for _ in range(5)
        ]
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = (await client.get("/v1/orders", params=params)).json()
            seen += [o["id"] for o in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == list(reversed(ids))
        await client.delete(f"/v1/orders/{ids[0]}")
        canceled = (await client.get("/v1/orders", params={"status": "canceled"})).json()
        assert [o["id"] for o in canceled["items"]] == [ids[0]]
        by_symbol = (await client.get("/v1/orders", params={"symbol": "AAPL"})).json()
        assert by_symbol["items"] == []


async def test_every_transition_is_an_event_in_order(gateway: Gateway) -> None:
    async with gateway.client(gateway.new_key("events-acct")) as client:
        filled = (await client.post("/v1/orders", json=market())).json()
        resting = (await client.post("/v1/orders", json=limit("1", symbol="MSFT"))).json()
        await eventually_status(client, filled["id"], "filled")
        assert (await client.delete(f"/v1/orders/{resting['id']}")).status_code == 200
    assert await order_events(gateway, filled["id"]) == [
        (None, "pending_new"),
        ("pending_new", "new"),
        ("new", "filled"),
    ]
    assert await order_events(gateway, resting["id"]) == [
        (None, "pending_new"),
        ("pending_new", "new"),
        ("new", "pending_cancel"),
        ("pending_cancel", "canceled"),
    ]


TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


async def test_updated_at_never_goes_back_and_every_time_has_one_precision(
    gateway: Gateway,
) -> None:
    """A market order fills inside the paper exchange's placement, stamped (to the
    millisecond, by the venue's clock) before the gateway stamps its acknowledgement."""
    async with gateway.client(gateway.new_key("clock")) as client:
        for _ in range(5):
            ack = (await client.post("/v1/orders", json=market())).json()
            filled = await eventually_status(client, ack["id"], "filled")
            for order in (ack, filled):
                assert TIMESTAMP.fullmatch(order["created_at"]), order
                assert TIMESTAMP.fullmatch(order["updated_at"]), order
            assert filled["created_at"] == ack["created_at"]
            assert filled["updated_at"] >= ack["updated_at"] >= ack["created_at"]


async def test_every_ending_has_its_whole_story_in_order_events(
    gateway: Gateway, admin: httpx.AsyncClient
) -> None:
    """Partly filled then canceled, refused by a risk check, expired at the session's close
    (filled and canceled ones: above; a broker's reject and an unknown outcome: in the
    fault tests)."""
    account = f"stories-{coid()}"
    async with gateway.client(gateway.new_key(account)) as client:
        await admin.put(f"/v1/risk/limits/{account}", json={"max_order_qty": "5000"})
        partly = (await client.post("/v1/orders", json=limit("1", "JPM", qty="1000"))).json()
        await admin.post("/v1/sim/prices", json={"symbol": "JPM", "price": "0.99"})
        await admin.post("/v1/sim/prices", json={"symbol": "JPM", "price": "220"})
        await eventually_status(client, partly["id"], "partially_filled")
        assert (await client.delete(f"/v1/orders/{partly['id']}")).status_code == 200

        refused = await client.post("/v1/orders", json=market(qty="6000"))
        assert refused.status_code == 422

        day = (await client.post("/v1/orders", json=limit("2", symbol="XOM"))).json()
        await admin.post("/v1/sim/session-close")
        await eventually_status(client, day["id"], "expired")

    assert await order_events(gateway, partly["id"]) == [
        (None, "pending_new"),
        ("pending_new", "new"),
        ("new", "partially_filled"),
        ("partially_filled", "pending_cancel"),
        ("pending_cancel", "canceled"),
    ]
    assert await order_events(gateway, refused.json()["order_id"]) == [
        (None, "pending_new"),
        ("pending_new", "denied"),
    ]
    assert await order_events(gateway, day["id"]) == [
        (None, "pending_new"),
        ("pending_new", "new"),
        ("new", "expired"),
    ]
