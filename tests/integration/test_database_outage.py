"""The order log's database stopped under traffic and started again, or stalled: a fault
like Redis failing.

The gateway runs on a private PostgreSQL server that the test starts and stops itself (not
the shared one): while it is down, orders are answered 503 ``storage.unavailable`` within a
second and none reaches the broker, ``/readyz`` says not ready; when it is back, the gateway
recovers by itself, and nothing acknowledged is lost or placed twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from sqlalchemy import make_url

from app.redisio.embedded import EmbeddedRedis
from app.storage.redis.keys import SimKeys
from tests.conftest import Gateway, Launch, _backends, launch_gateway, wait_for
from tests.helpers.orders import eventually_status, limit, market
from tests.helpers.postgres import PrivatePostgres, why_no_private_postgres
from tests.helpers.problems import assert_problem

needs_private_postgres = pytest.mark.skipif(
    why_no_private_postgres() is not None,
    reason=f"this test needs a private PostgreSQL: {why_no_private_postgres()}",
)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    # Under /tmp itself: the server's user must reach its directory.
    directory = Path(tempfile.mkdtemp(prefix="ordergate-pg-"))
    directory.chmod(0o755)
    server = PrivatePostgres(directory / "pg")
    server.start()
    try:
        yield server
    finally:
        server.close()
        shutil.rmtree(directory, ignore_errors=True)


class Traffic:
    """Senders posting market orders, each answer kept with the time it arrived."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client
        self.answers: list[tuple[float, float, dict[str, object], httpx.Response]] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, senders: int) -> None:
        self._tasks = [asyncio.create_task(self._send()) for _ in range(senders)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _send(self) -> None:
        while not self._stop.is_set():
            body = market("AAPL", side="buy")
            sent = time.monotonic()
            response = await self._client.post("/v1/orders", json=body, timeout=10)
            self.answers.append((sent, time.monotonic(), body, response))
            await asyncio.sleep(0.01)


@needs_private_postgres
async def test_a_stopped_database_is_a_503_within_a_second_and_the_gateway_recovers_by_itself(
    private_postgres: PrivatePostgres, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    redis_url = redis_server.url.rsplit("/", 1)[0] + "/13"
    gateway = launch_gateway(
        tmp_path / "gw",
        private_postgres.url,
        redis_url,
        workers=2,
        # API keys stay known through the outage, so orders get as far as the order log
        # (risk reserved, key claimed) before the database refuses them.
        extra_env={"ORDERGATE_AUTH_CACHE_TTL_S": "120"},
    )
    venue = aioredis.Redis.from_url(redis_url)
    account = "outage"
    try:
        key = gateway.new_key(account)  # written while the database is up
        async with gateway.client(key) as client:
            traffic = Traffic(client)
            traffic.start(senders=8)
            await wait_for(lambda: _answered(traffic, 201, 50), within=20)

            private_postgres.stop()
            stopped_at = time.monotonic()
            await asyncio.sleep(3)
            readiness = await client.get("/readyz")
            assert readiness.status_code == 503, readiness.text
            assert readiness.json()["checks"]["database"] != "ok"

            restarting_at = time.monotonic()
            private_postgres.start()
            started_at = time.monotonic()
            # It recovers by itself: orders are acknowledged again, and it is ready again.
            await wait_for(lambda: _answered(traffic, 201, 20, after=started_at), within=20)
            await traffic.stop()
            assert (await client.get("/readyz")).status_code == 200

            down = [a for a in traffic.answers if stopped_at + 1 <= a[0] and a[1] < restarting_at]
            assert len(down) >= 20
            for sent, answered, _body, response in down:
                # Sent a second after the stop or later: refused, and within a second.
                assert_problem(response, 503, "storage.unavailable")
                assert answered - sent < 1.0, answered - sent
            assert {a[3].status_code for a in traffic.answers} <= {201, 503}

            acknowledged = {
                str(body["client_order_id"]): response.json()
                for _s, _a, body, response in traffic.answers
                if response.status_code == 201
            }
            refused = {
                str(body["client_order_id"])
                for _s, _a, body, response in traffic.answers
                if response.status_code == 503
            }

            async def as_the_venue_has_them() -> bool:
                at_venue = await _venue_orders(venue, account)
                stored = {o["client_order_id"]: o for o in await _orders(client)}
                return not any(
                    o["status"] in ("pending_new", "unknown") for o in stored.values()
                ) and all(
                    c in stored
                    and (stored[c]["status"], Decimal(stored[c]["filled_qty"])) == ("filled", q)
                    for c, q in at_venue.items()
                )

            # A refused order sent again is placed once, like any new order.
            for _s, _a, body, _response in [a for a in down if a[3].status_code == 503][:5]:
                again = await client.post("/v1/orders", json=body)
                assert again.status_code == 201, again.text
                assert (await client.post("/v1/orders", json=body)).content == again.content

            # The applier catches up with the venue's reports once it can write again.
            await wait_for(as_the_venue_has_them, within=30)
            stored = {o["client_order_id"]: o for o in await _orders(client)}

        # Nothing acknowledged is lost, and its row is as the venue has it.
        assert set(acknowledged) <= set(stored)
        at_venue = await _venue_orders(venue, account)
        # Nothing reached the venue without its row first; nothing was placed twice.
        assert set(at_venue) <= set(stored)
        for coid, order in stored.items():
            if (
                coid not in at_venue
            ):  # written, but never placed: caught when the database went away
                assert coid in refused, order
                assert order["status"] == "rejected", order
        # Every order refused with a 503 that reached the venue was written first and is
        # filled once; the rest never traded.
        filled = sum(Decimal(o["filled_qty"]) for o in stored.values())
        assert filled == sum(at_venue.values())
        gateway.agrees_with_the_order_log(within=10)

        # Restarted while the gateway is idle: its kept connections are dead, and the
        # first orders after it must not pay for that.
        private_postgres.stop()
        private_postgres.start()
        async with gateway.client(key) as client:
            await wait_for(lambda: _ready(client), within=10)
            for _ in range(6):
                after_restart = await client.post("/v1/orders", json=market("AAPL"))
                assert after_restart.status_code == 201, after_restart.text
    finally:
        gateway.stop()
        await venue.flushdb()
        await venue.aclose()


async def _answered(traffic: Traffic, status: int, count: int, after: float = 0.0) -> bool:
    return sum(1 for a in traffic.answers if a[0] >= after and a[3].status_code == status) >= count


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


async def _orders(client: httpx.AsyncClient) -> list[dict[str, str]]:
    orders: list[dict[str, str]] = []
    params: dict[str, str | int] = {"limit": 500}
    while True:
        page = (await client.get("/v1/orders", params=params)).json()
        orders.extend(page["items"])
        if not page.get("next_cursor"):
            return orders
        params["cursor"] = page["next_cursor"]


async def _venue_orders(venue: aioredis.Redis, account: str) -> dict[str, Decimal]:
    """What the paper exchange holds for the account: client_order_id -> filled."""
    held: dict[str, Decimal] = {}
    async for key in venue.scan_iter(match=SimKeys.order(account, "*")):
        coid, filled = (value.decode() for value in await venue.hmget(key, "coid", "filled"))
        held[coid] = Decimal(int(filled)) / 10**6
    return held


@pytest.mark.parametrize("backend", _backends())
async def test_a_stalled_order_log_answers_503_in_time_and_never_places_the_order_late(
    fresh: Launch, backend: str
) -> None:
    """A database that hangs instead of refusing (here: a lock another session holds on
    the orders, 3 s): the order is answered 503 within its storage timeout, and is not
    placed after the client was told so; what it reserved is given back."""
    gateway: Gateway = fresh(backend, ORDERGATE_STORAGE_TIMEOUT_MS="1000")
    account = "stalled"
    async with gateway.client(gateway.new_key(account)) as client:
        warm = await client.post("/v1/orders", json=market())
        assert warm.status_code == 201, warm.text
        async with _orders_locked(gateway.database_url, seconds=3):
            sent = time.monotonic()
            answer = await client.post("/v1/orders", json=market())
            waited = time.monotonic() - sent
        assert_problem(answer, 503, "storage.unavailable")
        assert waited < 1.5, waited
        coid = json.loads(answer.request.content)["client_order_id"]

        async def resolved() -> bool:
            listing = (await client.get("/v1/orders", params={"limit": 10})).json()["items"]
            return not any(o["status"] in ("pending_new", "unknown") for o in listing)

        await wait_for(resolved, within=15)  # a write that committed late is reconciled
        late = [
            o
            for o in (await client.get("/v1/orders", params={"limit": 10})).json()["items"]
            if o["client_order_id"] == coid
        ]
        assert all(
            (o["status"], o["reject_reason"]) == ("rejected", "broker.not_received") for o in late
        ), [(o["status"], o["reject_reason"], o["updated_at"]) for o in late]
    venue = aioredis.Redis.from_url(gateway.redis_url)
    assert coid not in await _venue_orders(venue, account)
    await venue.aclose()
    gateway.agrees_with_the_order_log(within=5)


@contextlib.asynccontextmanager
async def _orders_locked(database_url: str, seconds: float) -> AsyncIterator[None]:
    """Another session holding the orders table against writes, released after
    ``seconds`` (from entering), whatever happens inside."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        db = sqlite3.connect(url.database or "", isolation_level=None)
        db.execute("BEGIN IMMEDIATE")  # SQLite's one write lock
        release: Callable[[], Awaitable[None]] = _closing_sqlite(db)
    else:
        conn = await asyncpg.connect(url.set(drivername="postgresql").render_as_string(False))
        await conn.execute("BEGIN; LOCK TABLE orders IN SHARE MODE")
        release = conn.close  # ends the transaction, and the lock with it
    until = time.monotonic() + seconds
    try:
        yield
    finally:
        await asyncio.sleep(max(0.0, until - time.monotonic()))
        await release()


def _closing_sqlite(db: sqlite3.Connection) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        db.execute("ROLLBACK")
        db.close()

    return close


@pytest.mark.parametrize("backend", _backends())
async def test_an_outcome_the_order_log_could_not_record_is_answered_with_the_order_it_is_about(
    fresh: Launch, backend: str
) -> None:
    """The broker took the order, then the order log stalled before the outcome was written:
    the 503 names the order and its status at the broker (it is not "nothing was done"), and
    the order log catches up from the broker's reports."""
    gateway: Gateway = fresh(
        backend, ORDERGATE_STORAGE_TIMEOUT_MS="1000", ORDERGATE_SIM__LATENCY_MS="400"
    )
    async with gateway.client(gateway.new_key("outcome")) as client:
        body = limit("1.00", symbol="MSFT")  # rests at the venue
        placing = asyncio.create_task(client.post("/v1/orders", json=body))
        await asyncio.sleep(0.2)  # written ahead; the venue's answer is on its way
        async with _orders_locked(gateway.database_url, seconds=2.5):
            answer = await placing
        problem = assert_problem(answer, 503, "storage.unavailable")
        assert problem["order_status"] == "new", problem
        order = await eventually_status(client, problem["order_id"], "new", within=10)
        assert order["client_order_id"] == body["client_order_id"]
