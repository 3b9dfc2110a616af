"""uvicorn's httptools protocol, with a response's writes sent together.

uvicorn writes a response in two sends, its head at ``http.response.start`` and its body at
``http.response.body``: two system calls, and two TCP segments for the client to read. Here a
connection's writes made in one turn of the event loop are joined and sent once, at the end
of that turn. Nothing waits longer than the turn it was written in.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport:
    """A transport whose writes in one loop turn leave in one ``write`` of the real one.
    Everything else goes to the real transport, after what is pending (so a close, say,
    never overtakes a write)."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        if not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        # Anything else (is_closing, pause_reading, get_extra_info, set_protocol, ...):
        # what is pending goes first.
        self.flush()
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """``uvicorn.run(..., http=CoalescingHttpToolsProtocol)``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # uvloop's transports are not asyncio.Transport subclasses, so no isinstance here.
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
