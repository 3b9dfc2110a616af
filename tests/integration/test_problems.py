"""Every kind of error answer the app gives, each a problem document that validates against
the app's own ``Problem`` schema, its ``status`` the HTTP status, with the headers HTTP
asks for (WWW-Authenticate on a 401, Allow on a 405)."""

from __future__ import annotations

import httpx

from tests.conftest import Gateway
from tests.helpers.orders import coid, eventually_status, limit, market
from tests.helpers.problems import assert_problem


async def test_refusals_before_any_work_are_problems(gateway: Gateway) -> None:
    async with gateway.client() as anonymous:
        unauthenticated = await anonymous.get("/v1/orders")
        assert_problem(unauthenticated, 401, "auth.unauthenticated")
        assert unauthenticated.headers["www-authenticate"] == "Bearer"
        fast_path = await anonymous.post("/v1/orders", json=market())
        assert_problem(fast_path, 401, "auth.unauthenticated")
        assert fast_path.headers["www-authenticate"] == "Bearer"
    async with gateway.client(gateway.keys["viewer"]) as viewer:
        assert_problem(await viewer.post("/v1/orders", json=market()), 403, "auth.forbidden")
    async with gateway.client(gateway.keys["alice"]) as alice:
        assert_problem(await alice.get("/v1/nowhere"), 404, "http.404")
        wrong_method = await alice.put("/v1/orders", json={})
        assert_problem(wrong_method, 405, "http.405")
        assert set(wrong_method.headers["allow"].replace(" ", "").split(",")) == {
            "GET",
            "POST",
            "DELETE",
        }
        too_large = await alice.post("/v1/orders", content=b"x" * (65 * 1024))
        assert_problem(too_large, 413, "request.too_large")
        assert_problem(await alice.post("/v1/orders", json={"qty": 1}), 422, "request.invalid")
        assert_problem(await alice.get("/v1/orders/0000"), 404, "order.not_found")


async def test_refusals_of_orders_are_problems_with_the_orders_status_apart(
    gateway: Gateway, admin: httpx.AsyncClient
) -> None:
    account = f"problems-{coid()}"
    async with gateway.client(gateway.new_key(account)) as client:
        unknown = await client.post("/v1/orders", json=market(symbol="ZZZZ"))
        assert_problem(unknown, 422, "order.unknown_symbol")
        both_keys = await client.post(
            "/v1/orders", json=market(client_order_id="k-1"), headers={"Idempotency-Key": "k-2"}
        )
        assert_problem(both_keys, 422, "order.invalid")

        limits = await admin.put(f"/v1/risk/limits/{account}", json={"max_order_qty": "5"})
        assert limits.status_code == 200
        refused = assert_problem(
            await client.post("/v1/orders", json=market(qty="6")), 422, "risk.max_order_qty"
        )
        assert refused["order_status"] == "denied"

        body = limit("1.00", symbol="AAPL")
        assert (await client.post("/v1/orders", json=body)).status_code == 201
        conflict = await client.post("/v1/orders", json={**body, "qty": "2"})
        assert_problem(conflict, 422, "idempotency.conflict")

        filled = (await client.post("/v1/orders", json=market())).json()
        await eventually_status(client, filled["id"], "filled")
        too_late = assert_problem(
            await client.delete(f"/v1/orders/{filled['id']}"), 409, "order.not_cancelable"
        )
        assert too_late["order_status"] == "filled"
