"""The HTTP server's limits on what a client may hold open, on raw sockets against a real
gateway: oversized heads (431 before they are buffered), a head or a body trickling in
(slowloris: 408), and idle connections (closed)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

import pytest

from tests.conftest import Gateway, Launch

HEAD_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
KEEP_ALIVE_S = 1
SLACK_S = 5.0  # a loaded machine may be late; never early


@pytest.fixture
def edge(fresh: Launch) -> Gateway:
    return fresh(
        ORDERGATE_HTTP__HEAD_TIMEOUT_S=str(HEAD_TIMEOUT_S),
        ORDERGATE_HTTP__BODY_TIMEOUT_S=str(BODY_TIMEOUT_S),
        ORDERGATE_HTTP__KEEP_ALIVE_TIMEOUT_S=str(KEEP_ALIVE_S),
    )


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self) -> tuple[int, dict[str, str], bytes]:
        """The next response: status, headers, body."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10 + SLACK_S)
        status_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(status_line.split()[1]), headers, body

    async def closed_within(self, seconds: float) -> float:
        """Seconds until the server closed the connection (it must within ``seconds``)."""
        started = time.monotonic()
        while await asyncio.wait_for(self.reader.read(65536), seconds):
            pass
        return time.monotonic() - started


@pytest.fixture
async def connect(edge: Gateway) -> AsyncIterator[object]:
    host, port = edge.base_url.removeprefix("http://").split(":")
    opened: list[Connection] = []

    async def open_connection() -> Connection:
        connection = Connection(*await asyncio.open_connection(host, int(port)))
        opened.append(connection)
        return connection

    yield open_connection
    for connection in opened:
        connection.writer.close()


async def test_a_head_over_the_limit_is_431_before_it_is_read_whole(connect: object) -> None:
    connection: Connection = await connect()  # type: ignore[operator]
    await connection.send(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
    answered = asyncio.create_task(connection.answer())
    sent = 0
    with contextlib.suppress(ConnectionResetError, BrokenPipeError):
        while sent < 200 * 1024 * 1024 and not answered.done():  # 200 MB, as the attack did
            await connection.send(b"x-filler: " + b"a" * 8180 + b"\r\n")
            sent += 8192
    assert sent < 16 * 1024 * 1024  # refused within its first reads, not at its end
    try:
        status, headers, body = await answered
    except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError):
        return  # closed, the answer lost to the reset: a refusal too
    assert status == 431
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["code"] == "request.headers_too_large"


async def test_a_head_within_the_limit_is_served(connect: object) -> None:
    connection: Connection = await connect()  # type: ignore[operator]
    filler = b"".join(b"x-filler-%d: %s\r\n" % (i, b"a" * 1000) for i in range(50))
    await connection.send(b"GET /healthz HTTP/1.1\r\nhost: x\r\n" + filler + b"\r\n")
    status, _, _ = await connection.answer()
    assert status == 200


async def test_a_head_trickling_in_is_408_and_closed(connect: object) -> None:
    connection: Connection = await connect()  # type: ignore[operator]
    await connection.send(b"GET /healthz HTTP/1.1\r\n")
    started = time.monotonic()

    async def trickle() -> None:
        for _ in range(100):  # a header byte every 0.2 s: never a whole head
            await asyncio.sleep(0.2)
            await connection.send(b"x")

    trickling = asyncio.create_task(trickle())
    try:
        status, headers, body = await connection.answer()
    finally:
        trickling.cancel()
    assert status == 408
    assert json.loads(body)["code"] == "request.timeout"
    assert headers["connection"] == "close"
    assert HEAD_TIMEOUT_S - 0.1 <= time.monotonic() - started <= HEAD_TIMEOUT_S + SLACK_S


async def test_a_body_trickling_in_is_408_and_closed(connect: object) -> None:
    connection: Connection = await connect()  # type: ignore[operator]
    await connection.send(
        b"POST /v1/orders HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"authorization: Bearer og_x\r\ncontent-length: 100\r\n\r\n{"
    )
    started = time.monotonic()
    status, _, body = await connection.answer()
    assert status in (401, 408)  # the key may be refused before the body is awaited
    if status == 401:
        status, _, body = await connection.answer()
    assert status == 408, body
    assert time.monotonic() - started <= BODY_TIMEOUT_S + SLACK_S
    await connection.closed_within(SLACK_S)


async def test_silent_and_idle_connections_are_closed(connect: object) -> None:
    silent: Connection = await connect()  # type: ignore[operator]
    status, _, _ = await silent.answer()  # never sent a byte: its head timed out
    assert status == 408
    await silent.closed_within(SLACK_S)

    idle: Connection = await connect()  # type: ignore[operator]
    await idle.send(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
    assert (await idle.answer())[0] == 200
    assert await idle.closed_within(KEEP_ALIVE_S + SLACK_S) >= KEEP_ALIVE_S - 0.1


async def test_a_request_the_server_cannot_parse_is_a_400_problem(connect: object) -> None:
    connection: Connection = await connect()  # type: ignore[operator]
    await connection.send(b"FOO /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
    status, headers, body = await connection.answer()
    assert status == 400
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["code"] == "http.400"
