"""The execution stream when things fail: reports committed but never published, Redis
emptied mid-stream, a subscriber that stops reading, the server shutting down. Each on a
gateway of its own (real processes, real Redis, the real database)."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.conftest import (
    DatabaseFactory,
    EmbeddedRedis,
    Gateway,
    Launch,
    _backends,
    launch_gateway,
    wait_for,
)
from tests.helpers.orders import limit, market
from tests.helpers.stream import (
    StalledSubscriber,
    Subscriber,
    assert_in_order_once,
    log_history,
)


async def place_all(gateway: Gateway, key: str, orders: list[dict[str, Any]]) -> int:
    """Place the orders, 16 at a time; how many were accepted (some may be refused while
    Redis is away)."""
    accepted = 0
    gate = asyncio.Semaphore(16)
    async with gateway.client(key) as client:

        async def one(order: dict[str, Any]) -> None:
            nonlocal accepted
            async with gate:
                if (await client.post("/v1/orders", json=order)).status_code == 201:
                    accepted += 1

        await asyncio.gather(*(one(order) for order in orders))
    return accepted


async def settled_history(gateway: Gateway, key: str) -> list[dict[str, Any]]:
    """The account's reports in the log once no more come (reconciliation may still be
    ending orders that an emptied Redis lost)."""
    history = await log_history(gateway, key)
    while True:
        await asyncio.sleep(1.0)
        again = await log_history(gateway, key)
        if again == history:
            return history
        history = again


@pytest.mark.parametrize("backend", _backends())
async def test_reports_committed_but_never_published_reach_subscribers_from_the_log(
    fresh: Launch, redis_server: EmbeddedRedis, backend: str
) -> None:
    """The gateway's Redis user may not write the execution streams for a while: every
    publish fails after its commit, as if the publisher had died there. The repair then
    publishes them from the order log, to the subscriber already connected."""
    user = f"blocked-{secrets.token_hex(3)}"
    admin = aioredis.Redis.from_url(redis_server.url)
    await admin.execute_command(
        "ACL", "SETUSER", user, "on", "nopass", "~*", "&*", "+@all",
        "-xadd", "(+xadd ~{sim}:* ~og:exec:wake:*)",
    )  # fmt: skip
    db = redis_server.url.rsplit("/", 1)[0].replace("redis://", f"redis://{user}:x@") + "/15"
    scratch = aioredis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + "/15")
    try:
        gateway = fresh(backend, workers=2, REDIS_URL=db, ORDERGATE_STREAM__HEARTBEAT_S="600")
        key = gateway.new_key("unpublished")
        subscriber = Subscriber(gateway, key)
        await subscriber.open()
        assert await place_all(gateway, key, [market("AAPL") for _ in range(40)]) == 40
        await asyncio.sleep(1.5)
        assert subscriber.reports == []  # committed, not published

        async def all_in_the_log() -> bool:  # on PostgreSQL, numbered in the publisher's rounds
            return len(await log_history(gateway, key)) == 120

        await wait_for(all_in_the_log, within=10, interval=0.2)
        assert subscriber.reports == []
        await admin.execute_command("ACL", "SETUSER", user, "+xadd")
        await subscriber.until_reports(120, within=10)
        assert_in_order_once(subscriber.reports)
        resumed = Subscriber(gateway, key)
        await resumed.open(since=0)
        await resumed.until_reports(120)
        assert resumed.reports == subscriber.reports == await log_history(gateway, key)
        await subscriber.close()
        await resumed.close()
    finally:
        await admin.execute_command("ACL", "DELUSER", user)
        await scratch.flushdb()  # db 15 is this test's alone
        await scratch.aclose()
        await admin.aclose()


@pytest.mark.parametrize("backend", _backends())
async def test_redis_emptied_mid_stream_loses_no_report(fresh: Launch, backend: str) -> None:
    gateway = fresh(backend, workers=2)
    assert gateway.redis_url is not None
    key = gateway.new_key("flushed")
    subscriber = Subscriber(gateway, key)
    await subscriber.open()
    redis = aioredis.Redis.from_url(gateway.redis_url)

    async def flush_midway() -> None:
        await subscriber.until_reports(100)
        await redis.flushdb()

    accepted, _ = await asyncio.gather(
        place_all(gateway, key, [limit("1.00") for _ in range(200)]), flush_midway()
    )
    await redis.aclose()
    assert accepted > 100
    history = await settled_history(gateway, key)
    await subscriber.until_reports(len(history))
    await asyncio.sleep(0.5)
    assert subscriber.reports == history
    assert_in_order_once(subscriber.reports)
    resumed = Subscriber(gateway, key)  # the stream's start is gone: read from the log
    await resumed.open(since=0)
    await resumed.until_reports(len(history))
    assert resumed.reports == history
    await subscriber.close()
    await resumed.close()


async def test_a_subscriber_that_stops_reading_is_closed_1013_and_others_get_everything(
    fresh: Launch,
) -> None:
    gateway = fresh(
        "sqlite",
        workers=1,
        ORDERGATE_STREAM__QUEUE_SIZE="1000",
        ORDERGATE_STREAM__SEND_BUFFER_BYTES="16384",
    )
    key = gateway.new_key("slow")
    fast = Subscriber(gateway, key)
    await fast.open(channels=("executions", "orders"))
    stalled = StalledSubscriber(gateway, key)
    stalled.subscribe(("executions", "orders"))
    assert await place_all(gateway, key, [limit("1.00") for _ in range(800)]) == 800
    await fast.until_reports(1600)
    assert_in_order_once(fast.reports)
    received, code, reason = await asyncio.to_thread(stalled.read_to_the_end)
    assert code == 1013
    assert "resume after" in reason
    assert received < 3200  # closed long before it had everything
    await fast.close()


async def test_a_server_shutting_down_closes_subscribers_with_1001(fresh: Launch) -> None:
    gateway = fresh("sqlite", workers=2)
    key = gateway.new_key("shutdown")
    subscribers = [Subscriber(gateway, key) for _ in range(4)]
    for subscriber in subscribers:
        await subscriber.open()
    await asyncio.to_thread(gateway.stop)
    for subscriber in subscribers:
        await subscriber.until_closed()
        assert subscriber.close_code == 1001


async def test_a_subscriber_resumes_across_a_gateway_restart(fresh: Launch) -> None:
    gateway = fresh("sqlite", workers=1)
    key = gateway.new_key("restart")
    before = Subscriber(gateway, key)
    await before.open()
    assert await place_all(gateway, key, [market("AAPL") for _ in range(10)]) == 10
    await before.until_reports(30)
    await asyncio.to_thread(gateway.stop)
    await before.until_closed()
    await asyncio.to_thread(gateway.start)
    assert await place_all(gateway, key, [market("AAPL") for _ in range(10)]) == 10
    after = Subscriber(gateway, key)
    await after.open(since=before.last_seq)
    await after.until_reports(30)

    async def settled() -> bool:
        return len(await log_history(gateway, key)) == 60

    await wait_for(settled)
    assert_in_order_once(before.reports + after.reports)
    await after.close()


async def test_a_stream_left_from_another_database_is_rebuilt_from_this_ones_log(
    fresh: Launch,
) -> None:
    """Redis kept an account's stream while the database was replaced (restored from a
    backup, say): the stream is ahead of the log. Nothing of it reaches subscribers; the
    repair rebuilds it from the log, and reports flow again."""
    gateway = fresh("sqlite", workers=1, ORDERGATE_STREAM__HEARTBEAT_S="600")
    assert gateway.redis_url is not None
    redis = aioredis.Redis.from_url(gateway.redis_url)
    stale = '{"type": "execution", "seq": 500, "stale": true}'
    await redis.xadd("og:{stale}:exec", {"t": 0, "r": stale}, id="500-0")
    await redis.aclose()
    key = gateway.new_key("stale")
    subscriber = Subscriber(gateway, key)
    await subscriber.open(since=0)
    assert await place_all(gateway, key, [limit("1.00") for _ in range(5)]) == 5
    await subscriber.until_reports(10, within=15)
    assert_in_order_once(subscriber.reports)
    assert not any("stale" in r for r in subscriber.reports)
    assert subscriber.reports == await log_history(gateway, key)
    await subscriber.close()


async def test_a_dead_peer_is_dropped_when_it_answers_no_ping(fresh: Launch) -> None:
    gateway = fresh(
        "sqlite", workers=1, ORDERGATE_STREAM__PING_INTERVAL_S="0.5",
        ORDERGATE_STREAM__PING_TIMEOUT_S="0.5",
    )  # fmt: skip
    key = gateway.new_key("dead-peer")
    dead = StalledSubscriber(gateway, key)  # reads nothing: answers no ping
    dead.subscribe(("executions",))
    alive = Subscriber(gateway, key)  # its client answers pings
    await alive.open()
    await asyncio.sleep(3)
    _, code, _ = await asyncio.to_thread(dead.read_to_the_end, 5.0)
    assert code == 1011  # keepalive ping timeout
    assert alive.close_code is None  # still open
    assert await place_all(gateway, key, [limit("1.00")]) == 1
    await alive.until_reports(2)
    await alive.close()


async def test_a_report_made_on_one_replica_reaches_a_subscriber_of_another(
    redis_server: EmbeddedRedis, database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    """Two gateways (each with its workers and applier) on one Redis and one database."""
    database_url = database_factory.create("sqlite")
    redis_url = redis_server.url.rsplit("/", 1)[0] + "/14"
    replicas = [
        launch_gateway(tmp_path / f"replica{n}", database_url, redis_url, workers=1)
        for n in range(2)
    ]
    try:
        key = replicas[0].new_key("replicas")
        subscriber = Subscriber(replicas[1], key)
        await subscriber.open()
        assert await place_all(replicas[0], key, [market("AAPL") for _ in range(5)]) == 5
        await subscriber.until_reports(15)
        assert_in_order_once(subscriber.reports)
        await subscriber.close()
    finally:
        for replica in replicas:
            replica.stop()
        flush = aioredis.Redis.from_url(redis_url)
        await flush.flushdb()
        await flush.aclose()
