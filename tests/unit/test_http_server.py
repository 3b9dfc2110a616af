"""The coalescing transport under the gateway's HTTP protocol, on a real event loop and a
real socket pair: what one loop turn writes arrives in one send, in order, and nothing
written is lost or overtaken by a close."""

from __future__ import annotations

import asyncio
import socket

from app.http.server import CoalescingTransport


class Sink(asyncio.Protocol):
    def __init__(self) -> None:
        self.closed = asyncio.Event()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


class CountingTransport:
    """The real transport, with its ``write`` calls counted."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.transport.write(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self.transport, name)


async def connected() -> tuple[CountingTransport, Sink, socket.socket]:
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, sink = await loop.create_connection(Sink, sock=ours)
    return CountingTransport(transport), sink, theirs


def received(peer: socket.socket) -> bytes:
    peer.setblocking(False)
    chunks = []
    while True:
        try:
            chunk = peer.recv(65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


async def test_writes_of_one_loop_turn_leave_in_one_write_in_order() -> None:
    real, _, peer = await connected()
    coalescing = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    coalescing.write(b"HTTP/1.1 201 Created\r\n\r\n")
    coalescing.write(memoryview(b'{"id": 1}'))
    assert real.writes == []  # not yet: the turn is not over
    await asyncio.sleep(0)
    assert real.writes == [b'HTTP/1.1 201 Created\r\n\r\n{"id": 1}']
    coalescing.write(b"next")
    await asyncio.sleep(0)
    assert real.writes[1:] == [b"next"]
    assert received(peer) == b'HTTP/1.1 201 Created\r\n\r\n{"id": 1}next'
    coalescing.close()
    peer.close()


async def test_close_and_other_calls_send_what_is_pending_first() -> None:
    real, sink, peer = await connected()
    coalescing = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    coalescing.write(b"head")
    assert not coalescing.is_closing()  # any other call: pending writes go first
    assert real.writes == [b"head"]
    coalescing.write(b"body")
    coalescing.close()
    await asyncio.wait_for(sink.closed.wait(), 1)
    assert real.writes == [b"head", b"body"]
    assert received(peer) == b"headbody"
    await asyncio.sleep(0)  # the scheduled flush finds nothing left, and writes nothing
    assert real.writes == [b"head", b"body"]
    peer.close()
