"""The symbols traded here: listed with their reference prices and decimals, and held to
those decimals; a symbol is written the same way in a filter as in an order."""

from __future__ import annotations

import httpx

from tests.conftest import Gateway, Launch, wait_for
from tests.helpers.orders import limit, market
from tests.helpers.problems import assert_problem


async def test_symbols_list_reference_prices_and_decimals(
    gateway: Gateway, admin: httpx.AsyncClient
) -> None:
    async with gateway.client(gateway.keys["viewer"]) as viewer:
        listed = (await viewer.get("/v1/symbols")).json()
        assert [s["symbol"] for s in listed] == sorted(s["symbol"] for s in listed)
        assert {"AAPL", "MSFT", "SPY"} <= {s["symbol"] for s in listed}
        for entry in listed:
            assert (entry["price_decimals"], entry["qty_decimals"]) == (2, 6)
            assert float(entry["reference_price"]) > 0
        # A price move (this deployment's market data) is the reference price from then on.
        moved = await admin.post("/v1/sim/prices", json={"symbol": "XOM", "price": "116.25"})
        assert moved.status_code == 200

        async def listed_moved() -> bool:
            symbols = {s["symbol"]: s for s in (await viewer.get("/v1/symbols")).json()}
            return bool(symbols["XOM"]["reference_price"] == "116.25")

        await wait_for(listed_moved)
        await admin.post("/v1/sim/prices", json={"symbol": "XOM", "price": "115.00"})


async def test_a_price_finer_than_the_tick_is_refused_naming_the_field(
    alice: httpx.AsyncClient,
) -> None:
    refused = await alice.post("/v1/orders", json=limit("1.001", symbol="IWM"))
    problem = assert_problem(refused, 422, "order.invalid")
    assert [e["loc"] for e in problem["errors"]] == [["body", "limit_price"]]
    assert (await alice.post("/v1/orders", json=limit("1.01", symbol="IWM"))).status_code == 201


async def test_a_reference_price_finer_than_the_tick_is_refused(admin: httpx.AsyncClient) -> None:
    moved = await admin.post("/v1/sim/prices", json={"symbol": "GOOGL", "price": "170.005"})
    problem = assert_problem(moved, 422, "order.invalid")
    assert [e["loc"] for e in problem["errors"]] == [["body", "price"]]


async def test_a_symbols_own_decimals_are_configurable(fresh: Launch) -> None:
    gateway = fresh(ORDERGATE_SYMBOL_DECIMALS='{"SPY": {"qty": 0}}')  # whole SPY shares only
    async with gateway.client(gateway.new_key("whole")) as client:
        refused = await client.post("/v1/orders", json=market("SPY", qty="1.5"))
        problem = assert_problem(refused, 422, "order.invalid")
        assert [e["loc"] for e in problem["errors"]] == [["body", "qty"]]
        assert (await client.post("/v1/orders", json=market("QQQ", qty="1.5"))).status_code == 201
        listed = {s["symbol"]: s for s in (await client.get("/v1/symbols")).json()}
        assert listed["SPY"]["qty_decimals"] == 0
        assert (await client.get("/v1/orders", params={"limit": 10})).json()["items"]


async def test_a_lowercase_symbol_is_refused_in_a_filter_as_in_an_order(
    alice: httpx.AsyncClient,
) -> None:
    assert_problem(await alice.post("/v1/orders", json=market("aapl")), 422, "request.invalid")
    filtered = await alice.get("/v1/orders", params={"symbol": "aapl"})
    problem = assert_problem(filtered, 422, "request.invalid")
    assert problem["errors"][0]["loc"] == ["query", "symbol"]
