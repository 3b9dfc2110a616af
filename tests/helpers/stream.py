"""A real WebSocket subscriber of ``/v1/stream`` that records what it receives."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

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
        assert json.loads(await self._ws.recv())["type"] == "authenticated"
        request: dict[str, Any] = {"op": "subscribe", "channels": list(channels)}
        if since is not None:
            request["since"] = since
        if accounts is not None:
            request["accounts"] = accounts
        await self._ws.send(json.dumps(request))
        subscribed = json.loads(await self._ws.recv())
        assert subscribed["type"] == "subscribed", subscribed
        self._reader = asyncio.create_task(self._read(self._ws))
        return dict(subscribed)

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for message in ws:
                self.frames.append(json.loads(message))
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
