"""The server's protocols: uvicorn's httptools protocol, with the limits a server facing
the network needs (uvicorn has none for httptools), and its WebSocket protocol, closing with
1001 at shutdown.

They subclass uvicorn's ``httptools_impl`` and ``websockets_sansio_impl``, which are not a
public API: a uvicorn upgrade may break them, and the tests in
``tests/integration/test_http_edge.py`` and ``test_execution_stream.py`` say so at once.
"""

from __future__ import annotations

import asyncio
import socket
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from app.config import get_settings
from app.domain.errors import GatewayError, HttpProblem, RequestHeadTooLarge, RequestTimedOut
from app.domain.views import PROBLEM_JSON, render_problem


class GatewayHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the limits a server facing the network needs: a
    request's head (request line and headers) larger than
    ``max_header_bytes`` is answered 431 and the connection closed before more of it is
    buffered; a head not complete within ``head_timeout_s`` of the connection opening or of
    the previous answer, or a body not complete within ``body_timeout_s`` of its head
    (a client trickling bytes, slowloris), is answered 408 and closed. An idle keep-alive
    connection is closed by uvicorn's own ``timeout_keep_alive``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limits = get_settings().http
        self._max_head = limits.max_header_bytes
        self._head_timeout_s = limits.head_timeout_s
        self._body_timeout_s = limits.body_timeout_s
        self._in_head = True  # the bytes arriving belong to a request's head
        self._head_bytes = 0
        self._tail = b""  # the last bytes of the head so far: "\r\n\r\n" may span reads
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self._head_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            seen = self._tail + data
            end = seen.find(b"\r\n\r\n")
            head_part = len(data) if end < 0 else end + 4 - len(self._tail)
            self._head_bytes += head_part
            if self._head_bytes > self._max_head:
                limit = f"request line and headers are limited to {self._max_head} bytes"
                self._refuse(RequestHeadTooLarge(limit))
                return
            self._tail = seen[-3:] if end < 0 else b""
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes, self._tail = False, 0, b""
        self._arm(self._body_timeout_s)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self._in_head = True  # what comes next is the next request's head
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:
            self._arm(self._head_timeout_s)  # the next request, if any, within this long

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def send_400_response(self, msg: str) -> None:
        # uvicorn's own answer to a request it cannot parse, as a problem like every other.
        self._refuse(HttpProblem(400, msg))

    def handle_websocket_upgrade(self) -> None:
        self._disarm()  # the connection is the WebSocket protocol's from here
        super().handle_websocket_upgrade()

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        receiving_body = not self._in_head and self.cycle is not None
        if receiving_body and not self.cycle.response_complete:
            if self.cycle.response_started:
                self.transport.close()  # too late for an answer of our own
                return
            self.cycle.disconnected = True  # the app's answer, if it comes, is not sent
        self._refuse(RequestTimedOut("the request did not arrive in time; connection closed"))

    def _refuse(self, error: GatewayError) -> None:
        """Answer ``error`` as a problem document and close the connection."""
        self._disarm()
        body = render_problem(error).encode()
        head = (
            f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}\r\n"
            f"content-type: {PROBLEM_JSON}\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        ).encode()
        self.transport.write(head + body)
        self.transport.close()


GOING_AWAY = 1001


class GatewayWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol, but:

    - a server shutting down closes its sockets with 1001 (going away: RFC 6455's code for
      a server going down) where uvicorn sends 1012 (service restart), which clients take
      as "come back at once";
    - the socket's kernel send buffer is fixed (``stream.send_buffer_bytes``) instead of
      growing up to the system's maximum (4 MiB here): a subscriber that stops reading
      holds that much of the kernel's memory at most, and backs up into its bounded queue,
      which closes it (1013), within a known number of reports."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            buffer = get_settings().stream.send_buffer_bytes
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer)

    def shutdown(self) -> None:
        if self.close_sent or not (self.handshake_complete and self.initial_response is None):
            super().shutdown()
            return
        self.stop_keepalive()
        self.queue.put_nowait({"type": "websocket.disconnect", "code": GOING_AWAY})
        self.conn.send_close(GOING_AWAY, "server shutting down")
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.transport.close()
