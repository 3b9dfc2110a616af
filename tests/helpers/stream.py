"""A real WebSocket subscriber of ``/v1/stream`` that records what it receives."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from tests.conftest import Gateway, wait_for


def stream_url(gateway: Gateway) -> str:
    return gateway.base_url.replace("http://", "ws://") + "/v1/stream"


class Subscriber:
    """Connects with a key, subscribes, and keeps every frame; ``reports`` are the
    execution reports, in arrival order."""

    def __init__(self, gateway: Gateway, key: str) -> None:
        self._url = stream_url(gateway)
        self._key = key
        self.frames: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def reports(self) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("type") == "execution"]

    @property
    def last_seq(self) -> int:
        return self.reports[-1]["seq"] if self.reports else 0

    async def open(
        self,
        *,
        since: int | dict[str, int] | None = None,
        channels: tuple[str, ...] = ("executions",),
        accounts: list[str] | None = None,
    ) -> dict[str, Any]:
        """Connect and subscribe; the ``subscribed`` frame."""
        self._ws = await websockets.connect(
            self._url, additional_headers={"Authorization": f"Bearer {self._key}"}
        )
        assert json.loads(await self._ws.recv())[0]["type"] == "authenticated"
        request: dict[str, Any] = {"op": "subscribe", "channels": list(channels)}
        if since is not None:
            request["since"] = since
        if accounts is not None:
            request["accounts"] = accounts
        await self._ws.send(json.dumps(request))
        subscribed, *more = json.loads(await self._ws.recv())
        assert subscribed["type"] == "subscribed", subscribed
        self.frames.extend(more)  # what came in the same frame
        self._reader = asyncio.create_task(self._read(self._ws))
        return dict(subscribed)

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for frame in ws:
                self.frames.extend(json.loads(frame))  # a frame is an array of messages
        except websockets.ConnectionClosed:
            pass
        self.close_code, self.close_reason = ws.close_code, ws.close_reason or ""

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self._ws = self._reader = None

    async def until_reports(self, count: int, within: float = 20.0) -> None:
        async def enough() -> bool:
            return len(self.reports) >= count

        await wait_for(enough, within=within)

    async def until_closed(self, within: float = 10.0) -> None:
        async def closed() -> bool:
            return self._reader is not None and self._reader.done()

        await wait_for(closed, within=within)


def assert_in_order_once(reports: list[dict[str, Any]], first: int = 1) -> None:
    """Each report once, numbered first, first + 1, ... with no gap."""
    seqs = [r["seq"] for r in reports]
    assert seqs == list(range(first, first + len(seqs))), _gaps(seqs)
    exec_ids = [r["exec_id"] for r in reports]
    assert len(set(exec_ids)) == len(exec_ids)


def _gaps(seqs: list[int]) -> str:
    wrong = [(a, b) for a, b in itertools.pairwise(seqs) if b != a + 1]
    return f"{len(seqs)} reports, breaks at {wrong[:10]}"


class StalledSubscriber:
    """A subscriber that subscribes and then reads nothing at all: a raw socket with a
    small receive buffer, the WebSocket protocol spoken by hand (websockets' sans-I/O
    client), so no library reads on its behalf."""

    def __init__(self, gateway: Gateway, key: str, receive_buffer: int = 4096) -> None:
        port = int(gateway.base_url.rsplit(":", 1)[1])
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self._sock.connect(("127.0.0.1", port))
        self._protocol = ClientProtocol(parse_uri(stream_url(gateway)))
        request = self._protocol.connect()
        request.headers["Authorization"] = f"Bearer {key}"
        self._protocol.send_request(request)
        self._flush()
        while self._protocol.state is not State.OPEN:  # the handshake's answer
            self._protocol.receive_data(self._sock.recv(4096))
            self._protocol.events_received()

    def _flush(self) -> None:
        self._sock.sendall(b"".join(self._protocol.data_to_send()))

    def subscribe(self, channels: tuple[str, ...]) -> None:
        request = {"op": "subscribe", "channels": list(channels)}
        self._protocol.send_text(json.dumps(request).encode())
        self._flush()

    def read_to_the_end(self, within: float = 30.0) -> tuple[int, int | None, str]:
        """Read all that waits: (text frames received, close code, close reason)."""
        self._sock.settimeout(within)
        frames = 0
        close: Close | None = None
        while close is None:
            data = self._sock.recv(1 << 16)
            if not data:
                break
            self._protocol.receive_data(data)
            for event in self._protocol.events_received():
                if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                    frames += 1
                elif isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                    close = Close.parse(event.data)
        self._sock.close()
        return frames, None if close is None else close.code, "" if close is None else close.reason


async def log_history(gateway: Gateway, key: str) -> list[dict[str, Any]]:
    """Every report the order log holds for the key's account."""
    items: list[dict[str, Any]] = []
    async with gateway.client(key) as client:
        while True:
            page = await client.get("/v1/executions", params={"since": len(items), "limit": 1000})
            found = page.json()["items"]
            if not found:
                return items
            items.extend(found)
