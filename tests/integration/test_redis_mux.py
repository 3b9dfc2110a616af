"""The multiplexed Redis client against a real redis-server: many commands in flight on one
socket each get their own reply, errors stay with their command, a hung or lost server fails
every waiter and the client reconnects by itself."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.redisio.embedded import EmbeddedRedis
from app.redisio.multiplexed import MultiplexedRedis, pairs
from tests.conftest import wait_for

DB = 11  # a database of the session's server no other test uses
REPLY_TIMEOUT_S = 0.2
PAUSE_S = 2.0  # the hung server's pause: ten times the reply timeout


def url(server: EmbeddedRedis, db: int = DB) -> str:
    return server.url.rsplit("/", 1)[0] + f"/{db}"


@pytest.fixture
async def admin(redis_server: EmbeddedRedis) -> AsyncIterator[Redis]:
    """redis-py on the same database: looks at Redis from the outside."""
    client = Redis.from_url(url(redis_server))
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
async def mux(redis_server: EmbeddedRedis, admin: Redis) -> AsyncIterator[MultiplexedRedis]:
    client = MultiplexedRedis(url(redis_server), reply_timeout_s=REPLY_TIMEOUT_S)
    yield client
    await client.close()


async def test_concurrent_commands_each_get_their_own_reply(mux: MultiplexedRedis) -> None:
    await mux.execute_many([("SET", f"k{i}", f"v{i}") for i in range(500)])

    async def read(i: int) -> bytes:
        await asyncio.sleep(0 if i % 3 else 0.001)  # interleave the writes
        value: bytes = await mux.execute("GET", f"k{i}")
        return value

    values = await asyncio.gather(*(read(i) for i in range(500)))
    assert values == [f"v{i}".encode() for i in range(500)]


async def test_the_database_in_the_url_is_selected(mux: MultiplexedRedis, admin: Redis) -> None:
    await mux.execute("SET", "where", "here")
    assert await admin.get("where") == b"here"
    other = Redis.from_url(url_of(admin, 0))
    try:
        assert await other.get("where") is None
    finally:
        await other.aclose()


def url_of(client: Redis, db: int) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{db}"


async def test_an_error_reply_raises_for_its_command_only(mux: MultiplexedRedis) -> None:
    await mux.execute("SET", "text", "abc")
    with pytest.raises(ResponseError, match="not an integer"):
        await mux.execute("INCR", "text")
    assert await mux.execute("INCR", "counter") == 1
    replies = await mux.execute_many([("INCR", "text"), ("INCR", "counter")], raise_errors=False)
    assert isinstance(replies[0], ResponseError)
    assert replies[1] == 2
    with pytest.raises(ResponseError):
        await mux.execute_many([("INCR", "counter"), ("INCR", "text")])
    assert await mux.execute("GET", "counter") == b"3"  # the pipeline's other command ran


async def test_scripts_survive_a_flushed_script_cache(mux: MultiplexedRedis) -> None:
    script = mux.script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    assert await script(["n"], [2]) == 2
    await mux.execute("SCRIPT", "FLUSH")
    assert await script(["n"], [3]) == 5  # NOSCRIPT -> sent whole
    await mux.execute("SCRIPT", "FLUSH")
    assert await script.many([(["n"], [1]), (["m"], [10])]) == [6, 10]
    assert await mux.execute("MGET", "n", "m") == [b"6", b"10"]  # each ran exactly once


async def test_a_transaction_is_atomic_and_returns_exec_replies(mux: MultiplexedRedis) -> None:
    replies = await mux.transaction([("HSET", "h", "a", "1", "b", "2"), ("HGETALL", "h")])
    assert replies[0] == 2
    assert pairs(replies[1]) == {b"a": b"1", b"b": b"2"}


async def test_a_hung_server_fails_every_waiter_then_the_client_reconnects(
    mux: MultiplexedRedis, admin: Redis
) -> None:
    await mux.execute("SET", "a", "1")
    await admin.execute_command("CLIENT", "PAUSE", str(int(PAUSE_S * 1000)), "ALL")
    started = time.monotonic()
    results = await asyncio.gather(
        *(mux.execute("GET", "a") for _ in range(20)), return_exceptions=True
    )
    waited = time.monotonic() - started
    assert all(isinstance(r, RedisTimeoutError) for r in results), results
    # The reply timeout, with a loaded machine's slack, not the pause.
    assert REPLY_TIMEOUT_S <= waited < PAUSE_S

    async def answers_again() -> bool:
        try:
            return bool(await mux.execute("GET", "a") == b"1")
        except RedisTimeoutError:
            return False

    await wait_for(answers_again, within=PAUSE_S + 5)


async def test_a_killed_connection_is_reopened(mux: MultiplexedRedis, admin: Redis) -> None:
    await mux.execute("CLIENT", "SETNAME", "og-mux-test")
    killed = await admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    assert killed >= 1
    # The first command may meet the dead socket; the client then connects afresh.
    for _ in range(2):
        try:
            assert await mux.execute("PING") == b"PONG"
            break
        except RedisConnectionError:
            continue
    else:
        pytest.fail("the client did not reconnect")
    assert await mux.execute("CLIENT", "GETNAME") is None  # a new connection


async def test_a_cancelled_caller_does_not_shift_the_replies(
    mux: MultiplexedRedis, admin: Redis
) -> None:
    await mux.execute_many([("SET", "x", "for-x"), ("SET", "y", "for-y")])
    await admin.execute_command("CLIENT", "PAUSE", "100", "ALL")
    first = asyncio.create_task(mux.execute("GET", "x"))
    await asyncio.sleep(0.02)
    first.cancel()
    second = await mux.execute("GET", "y")  # its reply comes after x's, which nobody awaits
    assert second == b"for-y"


async def test_a_refused_connection_fails_at_once() -> None:
    with EmbeddedRedis() as server:
        address = server.url
    client = MultiplexedRedis(address, reply_timeout_s=30.0, connect_timeout_s=30.0)
    started = time.monotonic()
    with pytest.raises(RedisConnectionError):
        await client.execute("PING")
    assert time.monotonic() - started < 5  # refused: not the 30 s timeouts
    await client.close()
