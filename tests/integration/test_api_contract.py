"""Authentication, account isolation, idempotency and input validation."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import pkgutil
import re
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from app.storage.redis.keys import RiskKeys
from tests.conftest import Gateway, wait_for
from tests.helpers.orders import coid, eventually_status, limit, market

# A limit order far from the price (it rests), without a key; repeated on purpose.
KEYLESS_LIMIT: dict[str, Any] = {
    "symbol": "QQQ",
    "side": "buy",
    "qty": "1",
    "type": "limit",
    "limit_price": "2",
    "allow_duplicate": True,
}


async def order_count(client: httpx.AsyncClient) -> int:
    return len((await client.get("/v1/orders", params={"limit": 500})).json()["items"])


# -- authentication and isolation -------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer og_not-a-key"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer"},
        {"Authorization": ""},
    ],
)
async def test_unknown_or_missing_key_is_401_problem(
    gateway: Gateway, headers: dict[str, str]
) -> None:
    async with gateway.client() as client:
        for method, path in (
            ("GET", "/v1/orders"),
            ("POST", "/v1/orders"),
            ("GET", "/v1/positions"),
            ("GET", "/v1/account"),
        ):
            response = await client.request(method, path, headers=headers, json=market())
            assert response.status_code == 401, (method, path)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["code"] == "auth.unauthenticated"


async def test_health_and_metrics_need_no_key(gateway: Gateway) -> None:
    async with gateway.client() as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = (await client.get("/readyz")).json()
        assert ready["ready"] is True
        assert set(ready["checks"]) == {"redis", "database", "broker"}
        exposed = await client.get("/metrics")
        assert exposed.status_code == 200
        # Latency per route in buckets fine enough for a millisecond SLA.
        assert 'http_request_duration_seconds_bucket{handler="/readyz",le="0.005"' in exposed.text
        assert 'http_requests_total{handler="/readyz"' in exposed.text
        # The API key is declared on every authenticated operation, and only there.
        schema = (await client.get("/openapi.json")).json()
        assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
        assert schema["paths"]["/v1/orders"]["post"]["security"] == [{"HTTPBearer": []}]
        assert "security" not in schema["paths"]["/readyz"]["get"]


async def test_revoked_key_is_refused(gateway: Gateway) -> None:
    key = gateway.new_key("revoke-acct")
    async with gateway.client(key) as client:
        assert (await client.get("/v1/orders")).status_code == 200
    # `keys create` prints only the key; find its id the way an operator would, in the table.
    from sqlalchemy import select

    from app.storage.sql.database import create_engine
    from app.storage.sql.tables import api_keys

    engine = create_engine(gateway.database_url)
    async with engine.connect() as conn:
        key_id = (
            await conn.execute(select(api_keys.c.id).where(api_keys.c.account == "revoke-acct"))
        ).scalar_one()
    await engine.dispose()
    gateway.cli("keys", "revoke", "--id", key_id)
    # A connection per request, so that both workers answer some.
    async with gateway.client(key, limits=httpx.Limits(max_keepalive_connections=0)) as client:

        async def refused_by_both_workers() -> bool:
            answers = [(await client.get("/v1/orders")).status_code for _ in range(8)]
            return answers == [401] * 8

        # Each worker's key cache lives 0.2 s in the tests; a loaded machine may be late.
        await wait_for(refused_by_both_workers, within=0.2 + 5)


async def test_viewer_can_read_but_not_trade(gateway: Gateway) -> None:
    async with gateway.client(gateway.keys["viewer"]) as viewer:
        assert (await viewer.get("/v1/orders")).status_code == 200
        response = await viewer.post("/v1/orders", json=market())
        assert response.status_code == 403
        assert response.json()["code"] == "auth.forbidden"
        assert (await viewer.delete("/v1/orders")).status_code == 403


async def test_trader_cannot_drive_the_paper_exchange(alice: httpx.AsyncClient) -> None:
    response = await alice.post("/v1/sim/prices", json={"symbol": "AAPL", "price": "1"})
    assert response.status_code == 403


async def test_another_accounts_order_is_404_and_never_listed(gateway: Gateway) -> None:
    async with (
        gateway.client(gateway.keys["alice"]) as alice,
        gateway.client(gateway.keys["bob"]) as bob,
    ):
        order = (await alice.post("/v1/orders", json=limit("1", symbol="GOOGL"))).json()
        for response in (
            await bob.get(f"/v1/orders/{order['id']}"),
            await bob.delete(f"/v1/orders/{order['id']}"),
        ):
            assert response.status_code == 404
            assert "GOOGL" not in response.text
            assert response.json()["code"] == "order.not_found"
        listed = (await bob.get("/v1/orders", params={"limit": 500})).json()["items"]
        assert order["id"] not in {o["id"] for o in listed}
        assert (await order_status_code(alice, order["id"])) == 200


async def order_status_code(client: httpx.AsyncClient, order_id: str) -> int:
    return (await client.get(f"/v1/orders/{order_id}")).status_code


# -- idempotency --------------------------------------------------------------------------


async def test_retry_with_same_client_order_id_replays_the_answer_byte_for_byte(
    alice: httpx.AsyncClient,
) -> None:
    body = limit("1.5", symbol="QQQ")
    first = await alice.post("/v1/orders", json=body)
    before = await order_count(alice)
    second = await alice.post(
        "/v1/orders",
        content=json.dumps(body, indent=2),
        headers={"content-type": "application/json"},
    )
    assert first.status_code == second.status_code == 201
    assert first.content == second.content
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"
    assert await order_count(alice) == before


async def test_same_key_with_a_different_body_is_422_and_changes_nothing(
    alice: httpx.AsyncClient,
) -> None:
    body = limit("1.5", symbol="QQQ")
    first = (await alice.post("/v1/orders", json=body)).json()
    changed = {**body, "qty": "2"}
    response = await alice.post("/v1/orders", json=changed)
    assert response.status_code == 422
    assert response.json()["code"] == "idempotency.conflict"
    assert (await alice.get(f"/v1/orders/{first['id']}")).json()["qty"] == "1"


async def test_idempotency_key_header_works_like_client_order_id(alice: httpx.AsyncClient) -> None:
    key = coid()
    body = KEYLESS_LIMIT
    first = await alice.post("/v1/orders", json=body, headers={"Idempotency-Key": key})
    second = await alice.post("/v1/orders", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == 201
    assert first.json()["client_order_id"] == key
    assert first.content == second.content
    # The same key in the body, or in both places, names the same order: its first answer.
    in_body = await alice.post("/v1/orders", json={**body, "client_order_id": key})
    in_both = await alice.post(
        "/v1/orders", json={**body, "client_order_id": key}, headers={"Idempotency-Key": key}
    )
    assert in_body.content == in_both.content == first.content
    assert in_body.headers["idempotent-replayed"] == "true"
    mismatch = await alice.post(
        "/v1/orders", json={**body, "client_order_id": coid()}, headers={"Idempotency-Key": key}
    )
    assert mismatch.status_code == 422


async def test_orders_without_a_key_are_never_deduplicated(gateway: Gateway) -> None:
    async with gateway.client(gateway.new_key("keyless")) as client:
        body = KEYLESS_LIMIT
        first, second = [await client.post("/v1/orders", json=body) for _ in range(2)]
        assert first.status_code == second.status_code == 201
        assert first.json()["client_order_id"] != second.json()["client_order_id"]
        assert await order_count(client) == 2


async def test_fifty_concurrent_identical_submissions_place_one_order(gateway: Gateway) -> None:
    async with gateway.client(
        gateway.new_key("burst-acct"), limits=httpx.Limits(max_connections=50)
    ) as client:
        body = limit("3", symbol="AAPL")
        responses = await asyncio.gather(*(client.post("/v1/orders", json=body) for _ in range(50)))
        statuses = sorted({r.status_code for r in responses})
        assert set(statuses) <= {201, 409}, statuses
        created = [r for r in responses if r.status_code == 201]
        assert created, "no submission succeeded"
        assert len({r.content for r in created}) == 1  # every 201 is the same answer
        for r in responses:
            if r.status_code == 409:
                assert r.json()["code"] == "idempotency.in_flight"
        assert await order_count(client) == 1


async def test_idempotency_survives_redis_forgetting_the_key(gateway: Gateway) -> None:
    """The database's unique (account, client_order_id) is the backstop."""
    import redis.asyncio as aioredis

    from app.storage.redis import keys

    async with gateway.client(gateway.new_key("forgetful")) as client:
        body = limit("4", symbol="AAPL")
        first = await client.post("/v1/orders", json=body)
        store = aioredis.Redis.from_url(gateway.redis_url)
        assert await store.delete(keys.idempotency("forgetful", body["client_order_id"])) == 1
        await store.aclose()
        second = await client.post("/v1/orders", json=body)
        assert second.status_code == 201
        assert second.content == first.content
        assert second.headers["idempotent-replayed"] == "true"
        # Forgotten again: only the order log can tell that this body is another order.
        store = aioredis.Redis.from_url(gateway.redis_url)
        assert await store.delete(keys.idempotency("forgetful", body["client_order_id"])) == 1
        await store.aclose()
        conflict = await client.post("/v1/orders", json={**body, "qty": "9"})
        assert conflict.status_code == 422
        assert conflict.json()["code"] == "idempotency.conflict"
        assert await order_count(client) == 1


# -- validation: clear 4xx, no trace ---------------------------------------------------

BAD_BODIES: list[tuple[str, Any]] = [
    ("unknown field", {**market(), "leverage": 10}),
    ("zero qty", market(qty="0")),
    ("negative qty", market(qty="-1")),
    ("NaN qty", market(qty="NaN")),
    ("Infinity qty", market(qty="Infinity")),
    ("absurd qty", market(qty="1e30")),
    ("too many decimals", market(qty="1.0000001")),
    ("limit without price", {**market(), "type": "limit"}),
    ("market with price", market(limit_price="10")),
    ("bad side", market(side="short")),
    ("bad tif", market(time_in_force="gtd")),
    ("lowercase symbol", market(symbol="aapl")),
    ("number as symbol", market(symbol=123)),
    ("missing qty", {"symbol": "AAPL", "side": "buy"}),
    ("array body", [market()]),
    ("null body", None),
    ("negative price", limit("-5")),
    ("bad client_order_id", market(client_order_id="has space")),
    ("number as allow_duplicate", market(allow_duplicate=1)),
]


@pytest.mark.parametrize(("case", "body"), BAD_BODIES, ids=[c for c, _ in BAD_BODIES])
async def test_bad_order_bodies_are_422_problems_and_leave_no_trace(
    gateway: Gateway, case: str, body: Any
) -> None:
    async with gateway.client(gateway.new_key(f"bad-{abs(hash(case)) % 10**8}")) as client:
        response = await client.post("/v1/orders", json=body)
        assert response.status_code == 422, (case, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["status"] == 422
        assert problem["code"] in {"request.invalid", "order.invalid"}
        assert "Traceback" not in response.text
        assert await order_count(client) == 0


async def test_unknown_symbol_is_rejected_before_anything_happens(alice: httpx.AsyncClient) -> None:
    before = await order_count(alice)
    response = await alice.post("/v1/orders", json=market(symbol="ZZZZ"))
    assert response.status_code == 422
    assert response.json()["code"] == "order.unknown_symbol"
    assert await order_count(alice) == before


@pytest.mark.parametrize(
    "payload",
    [
        b"{not json",
        b'{"symbol": "AAPL",',
        b"\xff\xfe",
        b"",
        # A key twice: which would a reader take? (the last one placed an MSFT order)
        b'{"symbol": "AAPL", "side": "buy", "qty": "1", "symbol": "MSFT"}',
    ],
)
async def test_malformed_json_is_a_422_problem(alice: httpx.AsyncClient, payload: bytes) -> None:
    before = await order_count(alice)
    response = await alice.post(
        "/v1/orders", content=payload, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert await order_count(alice) == before


@pytest.mark.parametrize("chunked", [False, True], ids=["fast-path", "fastapi-route"])
async def test_decimals_are_read_exactly_or_refused_naming_the_field(
    alice: httpx.AsyncClient, chunked: bool
) -> None:
    """A JSON number is read from its literal text, never through a float; a string must
    be -?digits[.digits]. Sent chunked, the order goes to FastAPI's route, not the fast path."""

    async def post(text: str) -> httpx.Response:
        async def body() -> Any:
            yield text.encode()

        content: Any = body() if chunked else text.encode()
        return await alice.post(
            "/v1/orders", content=content, headers={"content-type": "application/json"}
        )

    before = await order_count(alice)
    order = {**limit("1", symbol="QQQ"), "qty": "1"}
    for field, literal in (
        ("limit_price", "229.99999999999999"),  # was taken as 230
        ("qty", "1.0000000000000001"),  # was taken as 1
        ("qty", '"1_0"'),  # was taken as 10
        ("qty", '"\uff11\uff10"'),  # full-width digits, also 10
        ("qty", '" 7 "'),
        ("limit_price", "1e-7"),
    ):
        text = json.dumps({**order, field: "@"}).replace('"@"', literal)
        refused = await post(text)
        assert refused.status_code == 422, (literal, refused.text)
        problem = refused.json()
        assert problem["code"] == "request.invalid"
        assert [e["loc"][-1] for e in problem["errors"]] == [field], (literal, problem)
    assert await order_count(alice) == before

    exact = json.dumps({**order, "client_order_id": coid()}).replace('"1"', "1.10", 1)
    placed = await post(exact.replace('"limit_price": "1"', '"limit_price": 1.2500'))
    assert placed.status_code == 201, placed.text
    assert (placed.json()["qty"], placed.json()["limit_price"]) == ("1.1", "1.25")


async def test_every_answer_writes_a_decimal_the_same_way(
    gateway: Gateway, admin: httpx.AsyncClient
) -> None:
    """The shortest plain form: no trailing zeros, no exponent (100.50 -> "100.5")."""
    account = f"canonical-{coid()}"
    async with gateway.client(gateway.new_key(account)) as client:
        resting = await client.post("/v1/orders", json=limit("100.50", symbol="QQQ", qty="2.0"))
        assert resting.status_code == 201, resting.text
        assert (resting.json()["limit_price"], resting.json()["qty"]) == ("100.5", "2")
        stored = (await client.get(f"/v1/orders/{resting.json()['id']}")).json()
        assert (stored["limit_price"], stored["qty"]) == ("100.5", "2")
        filled = (await client.post("/v1/orders", json=market("AAPL", qty="3"))).json()
        await eventually_status(client, filled["id"], "filled")
        done = (await client.get(f"/v1/orders/{filled['id']}")).json()
        assert done["avg_fill_price"] == "230"  # the paper exchange's AAPL price, 230.00
        [position] = (await client.get("/v1/positions")).json()
        assert (position["qty"], position["avg_price"], position["realized_pnl"]) == (
            "3",
            "230",
            "0",
        )
        assert (await client.get("/v1/account")).json()["gross_position_cost"] == "690"
        [state] = (await client.get("/v1/risk/state")).json()["accounts"]
        marks = {e["symbol"]: e["mark"] for e in state["exposure"]}
        assert marks == {"AAPL": "230", "QQQ": "500"}
    limits = await admin.put(f"/v1/risk/limits/{account}", json={"max_position": "10.500"})
    assert limits.json()["max_position"] == "10.5"


async def test_json_numbers_keep_their_exact_decimals(alice: httpx.AsyncClient) -> None:
    # Numbers as well as strings: the order entry fast path parses JSON itself (pydantic, not
    # FastAPI's json.loads); both give these decimals exactly.
    body = {**limit("123.45", qty="3"), "qty": 3, "limit_price": 123.45}
    response = await alice.post("/v1/orders", json=body)
    assert response.status_code == 201, response.text
    order = response.json()
    assert (order["qty"], order["limit_price"]) == ("3", "123.45")


@pytest.mark.parametrize(
    ("case", "headers"),
    [
        ("bad Idempotency-Key", {"Idempotency-Key": "has space"}),
        ("text body", {"content-type": "text/plain"}),
        ("form body", {"content-type": "application/x-www-form-urlencoded"}),
    ],
)
async def test_requests_the_order_entry_lane_does_not_serve_get_fastapis_answer(
    gateway: Gateway, case: str, headers: dict[str, str]
) -> None:
    async with gateway.client(gateway.new_key(f"odd-{abs(hash(case)) % 10**8}")) as client:
        response = await client.post(
            "/v1/orders", content=json.dumps(market()).encode(), headers=headers
        )
        assert response.status_code == 422, (case, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "request.invalid"
        assert await order_count(client) == 0


def orders_counted(metrics_text: str, status: str) -> float:
    """``http_requests_total`` of POST /v1/orders answered with ``status`` (e.g. "2xx")."""
    for line in metrics_text.splitlines():
        if line.startswith("http_requests_total{") and all(
            label in line
            for label in ('handler="/v1/orders"', 'method="POST"', f'status="{status}"')
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_the_order_entry_lane_and_fastapi_answer_alike_and_are_both_counted(
    gateway: Gateway,
) -> None:
    # With a Content-Length the fast path in front of FastAPI serves the order; sent chunked
    # (no length) it goes through FastAPI's route. Same answers, same metrics.
    async with gateway.client(gateway.new_key("lane-vs-route")) as client:
        before = (await client.get("/metrics")).text
        body = json.dumps(market()).encode()

        async def chunked() -> Any:
            yield json.dumps(market()).encode()

        by_lane = await client.post("/v1/orders", content=body)
        by_route = await client.post(
            "/v1/orders", content=chunked(), headers={"content-type": "application/json"}
        )
        refused = await client.post("/v1/orders", content=b'{"symbol": "AAPL"}')
        after = (await client.get("/metrics")).text

    for answer in (by_lane, by_route):
        assert answer.status_code == 201, answer.text
        assert answer.headers["content-type"] == "application/json"
    assert by_lane.json().keys() == by_route.json().keys()
    assert by_lane.json()["status"] == by_route.json()["status"]
    assert refused.status_code == 422
    assert refused.json()["code"] == "request.invalid"
    assert orders_counted(after, "2xx") - orders_counted(before, "2xx") == 2
    assert orders_counted(after, "4xx") - orders_counted(before, "4xx") == 1


async def test_an_unexpected_error_is_the_apps_500_problem_from_the_lane_and_the_route(
    gateway: Gateway,
) -> None:
    # A limits document in Redis that does not parse: no order of the account can be
    # decided, and nothing in the gateway expects it.
    account = "broken-limits"
    assert gateway.redis_url is not None
    redis = Redis.from_url(gateway.redis_url)
    await redis.hset(RiskKeys(account).state, mapping={"built": "1", "doc": "{not json"})
    key = gateway.new_key(account)

    async def chunked() -> Any:
        yield json.dumps(market()).encode()

    try:
        async with gateway.client(key) as client:
            before = (await client.get("/metrics")).text
            by_lane = await client.post("/v1/orders", json=market())
        # (Starlette re-raises the error after its 500, and uvicorn then drops the
        # connection: a client of its own.)
        async with gateway.client(key) as client:
            by_route = await client.post(
                "/v1/orders", content=chunked(), headers={"content-type": "application/json"}
            )
        async with gateway.client(key) as client:
            after = (await client.get("/metrics")).text
            assert await order_count(client) == 0
    finally:
        await redis.delete(RiskKeys(account).state)
        await redis.aclose()
    for answer in (by_lane, by_route):
        assert answer.status_code == 500, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
    assert by_lane.json() == by_route.json()
    assert by_lane.json()["code"] == "internal"
    assert orders_counted(after, "5xx") - orders_counted(before, "5xx") == 2


async def test_body_over_64_kib_is_413(alice: httpx.AsyncClient) -> None:
    before = await order_count(alice)
    big = json.dumps({**market(), "pad": "x" * 70_000})
    response = await alice.post(
        "/v1/orders", content=big, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["code"] == "request.too_large"

    async def chunks() -> Any:  # no Content-Length: the limit holds while streaming
        for _ in range(20):
            yield b"x" * 8192

    streamed = await alice.post(
        "/v1/orders", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413
    assert await order_count(alice) == before


async def test_unknown_route_is_a_problem_too(alice: httpx.AsyncClient) -> None:
    response = await alice.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


# -- the documentation ---------------------------------------------------------------------


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_interactive_docs_need_no_internet(gateway: Gateway, page: str) -> None:
    """Every script, style and image the page loads is served by the gateway itself."""
    async with gateway.client() as client:
        html = await client.get(page)
        assert html.status_code == 200
        assert html.headers["content-type"].startswith("text/html")
        assets = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]+)['"]""", html.text)
        urls = re.findall(r"""url\s*:\s*['"]([^'"]+)['"]""", html.text)
        assert assets, html.text
        for link in [*assets, *urls]:
            assert link.startswith("/"), f"{page} loads {link} from elsewhere"
            assert (await client.get(link)).status_code == 200, link
        assert "/openapi.json" in urls or "/openapi.json" in html.text


def _internal_class_names() -> set[str]:
    import app

    names: set[str] = set()
    for module in pkgutil.walk_packages(app.__path__, "app."):
        if ".bench" in module.name:
            continue
        for name, obj in vars(importlib.import_module(module.name)).items():
            # CamelCase only: "Order" or "Answer" are English words too.
            camel = sum(c.isupper() for c in name) > 1
            if camel and inspect.isclass(obj) and obj.__module__.startswith("app."):
                names.add(name)
    return names


async def test_the_openapi_document_names_no_internal_classes(gateway: Gateway) -> None:
    async with gateway.client() as client:
        document = (await client.get("/openapi.json")).json()
    public = set(document["components"]["schemas"]) | {"RiskLimits", "SymbolLimits"}
    internal = _internal_class_names() - public
    texts: list[str] = [document["info"].get("summary", "")]
    for operations in document["paths"].values():
        texts += [op.get("description", "") + op.get("summary", "") for op in operations.values()]
    texts += [
        schema.get("description", "") for schema in document["components"]["schemas"].values()
    ]
    for text in texts:
        words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]+", text))
        assert not words & internal, (words & internal, text)
