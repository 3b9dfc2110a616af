"""Commands packed in C (hiredis) are the bytes redis-py packs in Python, and work on a real
server, over TCP and a unix socket."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from app.runtime import open_redis
from app.storage.embedded_redis import EmbeddedRedis
from app.storage.redis_connection import HiredisConnection, HiredisUnixConnection

COMMANDS: list[tuple[Any, ...]] = [
    ("GET", "key"),
    ("CONFIG GET", "maxmemory"),
    (b"CLIENT LIST",),
    ("SET", "k", "välüe ✓", "PX", 500),
    ("EVALSHA", "0" * 40, 4, "og:{a}:risk", b"\x00\xffraw", bytearray(b"ba"), memoryview(b"mv")),
    ("HSET", "h", "f", 12345678901234567890),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: str(c[0]))
def test_packing_in_c_gives_the_same_bytes(command: tuple[Any, ...]) -> None:
    python = b"".join(bytes(p) for p in Connection().pack_command(*command))
    assert b"".join(HiredisConnection().pack_command(*command)) == python


def test_an_unpackable_argument_is_a_data_error() -> None:
    with pytest.raises(DataError):
        HiredisConnection().pack_command("SET", "k", object())


async def test_the_gateway_client_packs_in_c_over_tcp_and_unix_sockets(
    redis_server: EmbeddedRedis,
) -> None:
    with EmbeddedRedis() as unix_server:
        for url, kind in (
            (redis_server.url, HiredisConnection),
            (unix_server.url, HiredisUnixConnection),
        ):
            redis = open_redis(url.rsplit("/", 1)[0] + "/9" if url.startswith("redis") else url)
            try:
                assert redis.connection_pool.connection_class is kind
                await redis.set("og:test:packed", "välüe ✓", px=5000)
                assert (await redis.get("og:test:packed")).decode() == "välüe ✓"
                assert await redis.execute_command("CONFIG GET", "port")
                await redis.delete("og:test:packed")
            finally:
                await redis.aclose()
