"""A Redis that asks for credentials, as a production one does: the password or ACL user in
``REDIS_URL`` is presented on every connection the gateway opens, a wrong one is refused
with a clear error, and a least-privilege ACL user (only the gateway's own keys and
channel) is enough for the whole order path."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from app.redisio.embedded import EmbeddedRedis
from app.redisio.multiplexed import MultiplexedRedis
from tests.conftest import DatabaseFactory, free_port, launch_gateway, wait_for

ADMIN_PASSWORD = "admin-secret"
GATEWAY_USER = "gateway"
GATEWAY_PASSWORD = "gateway-secret"
# What the gateway needs and no more: its own key spaces and its limits channel.
GATEWAY_ACL = ["on", f">{GATEWAY_PASSWORD}", "~og:*", "~{sim}:*", "&og:*", "+@all", "-@admin"]


def url(server: EmbeddedRedis, user: str = "", password: str = "", db: int = 0) -> str:
    credentials = f"{user}:{password}@" if password else ""
    return f"redis://{credentials}127.0.0.1:{server.port}/{db}"


@pytest.fixture(scope="module")
def secured_redis() -> Iterator[EmbeddedRedis]:
    credentials = ["--requirepass", ADMIN_PASSWORD, "--user", GATEWAY_USER, *GATEWAY_ACL]
    with EmbeddedRedis(port=free_port(), extra_args=credentials) as server:
        yield server


@pytest.fixture
async def admin(secured_redis: EmbeddedRedis) -> AsyncIterator[Redis]:
    client = Redis.from_url(url(secured_redis, password=ADMIN_PASSWORD))
    yield client
    await client.aclose()


async def test_the_password_in_the_url_authenticates_and_the_database_is_selected(
    secured_redis: EmbeddedRedis,
) -> None:
    mux = MultiplexedRedis(url(secured_redis, password=ADMIN_PASSWORD, db=4), reply_timeout_s=1.0)
    try:
        await mux.execute("SET", "where", "db4")
        assert await mux.execute("ACL", "WHOAMI") == b"default"
    finally:
        await mux.close()
    db4 = Redis.from_url(url(secured_redis, password=ADMIN_PASSWORD, db=4))
    try:
        assert await db4.get("where") == b"db4"
        await db4.delete("where")
    finally:
        await db4.aclose()


async def test_an_acl_user_in_the_url_connects_as_that_user_with_its_rights(
    secured_redis: EmbeddedRedis,
) -> None:
    mux = MultiplexedRedis(url(secured_redis, GATEWAY_USER, GATEWAY_PASSWORD), reply_timeout_s=1.0)
    try:
        assert await mux.execute("ACL", "WHOAMI") == GATEWAY_USER.encode()
        assert await mux.execute("SET", "og:acl-probe", "1") is not None
        with pytest.raises(ResponseError, match="NOPERM"):
            await mux.execute("SET", "not-the-gateways", "1")
    finally:
        await mux.close()


async def test_a_wrong_password_is_refused_clearly_and_leaves_no_connection(
    secured_redis: EmbeddedRedis, admin: Redis
) -> None:
    before = len(await admin.client_list())
    mux = MultiplexedRedis(
        url(secured_redis, GATEWAY_USER, "not-the-password"), reply_timeout_s=1.0
    )
    try:
        for _ in range(2):  # a second command tries again, and is refused again
            with pytest.raises(RedisConnectionError, match=r"refused.*WRONGPASS"):
                await mux.execute("PING")
    finally:
        await mux.close()
    assert len(await admin.client_list()) == before  # the refused sockets were closed


async def test_no_password_for_a_server_that_wants_one_gets_noauth(
    secured_redis: EmbeddedRedis,
) -> None:
    mux = MultiplexedRedis(url(secured_redis), reply_timeout_s=1.0)
    try:
        with pytest.raises(ResponseError, match="NOAUTH"):
            await mux.execute("PING")
    finally:
        await mux.close()


async def test_the_order_path_runs_as_a_least_privilege_acl_user(
    secured_redis: EmbeddedRedis,
    database_factory: DatabaseFactory,
    tmp_path: Path,
) -> None:
    """Every connection of the gateway (the multiplexed client, pub/sub, the applier's
    stream read and leader lease) authenticates, and the ACL user's key patterns cover
    every key and channel the order path uses."""
    gateway = launch_gateway(
        tmp_path,
        database_factory.create("sqlite"),
        url(secured_redis, GATEWAY_USER, GATEWAY_PASSWORD),
        workers=1,
    )
    try:
        key = gateway.new_key("acl-desk")
        async with gateway.client(key) as client:
            placed = await client.post(
                "/v1/orders",
                json={"symbol": "AAPL", "side": "buy", "qty": "5", "type": "market"},
            )
            assert placed.status_code == 201, placed.text
            order_id = placed.json()["id"]

            async def filled() -> bool:
                order = (await client.get(f"/v1/orders/{order_id}")).json()
                return bool(order["status"] == "filled")

            await wait_for(filled)  # the applier read the report stream and applied it
            positions = (await client.get("/v1/positions")).json()
            assert [(p["symbol"], p["qty"]) for p in positions] == [("AAPL", "5")]
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text
    finally:
        gateway.stop()
    assert "NOPERM" not in (gateway.log_path.read_text() if gateway.log_path else "")
