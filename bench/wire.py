"""The load generator's HTTP/1.1 client: pre-built request bytes and one keep-alive connection.

Per request the generator only splices a counter into ready-made bytes and feeds the reply to
httptools' C parser. httpx costs far more CPU per request, and on a 2-core machine every
cycle the client spends is a cycle taken from the server it is measuring.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import httptools

# Fixed width keeps every body the same length, so Content-Length is computed once.
ID_DIGITS = 9
_ID_MARK = "\x00id\x00"


@dataclass(frozen=True, slots=True)
class RequestTemplate:
    """Request ``n`` is ``prefixes[k] + <n, zero-padded> + suffixes[k]`` with ``k = n % len``."""

    prefixes: tuple[bytes, ...]
    suffixes: tuple[bytes, ...]

    def build(self, n: int) -> bytes:
        k = n % len(self.prefixes)
        return self.prefixes[k] + str(n).zfill(ID_DIGITS).encode() + self.suffixes[k]


def json_post_template(
    host: str,
    port: int,
    path: str,
    bodies: Sequence[Mapping[str, Any]],
    id_field: str,
    id_prefix: str,
    headers: Mapping[str, str] | None = None,
) -> RequestTemplate:
    """A POST of JSON ``bodies`` in rotation; ``id_field`` becomes ``id_prefix`` + counter."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    prefixes: list[bytes] = []
    suffixes: list[bytes] = []
    for body in bodies:
        text = json.dumps({**body, id_field: _ID_MARK}, separators=(",", ":"))
        marker = json.dumps(_ID_MARK)[1:-1]  # the mark as it appears inside a JSON string
        before, after = text.split(marker)
        length = len((before + id_prefix).encode()) + ID_DIGITS + len(after.encode())
        head = (
            f"POST {path} HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {length}\r\n"
            f"{extra}\r\n"
        )
        prefixes.append((head + before + id_prefix).encode())
        suffixes.append(after.encode())
    return RequestTemplate(tuple(prefixes), tuple(suffixes))


# Keep this much of a non-2xx body: enough to read a problem+json ``code``.
ERROR_BODY_BYTES = 512

# Called with (connection, status, intended send time, completion time, body if not 2xx).
ResponseCallback = Callable[["ClientConnection", int, float, float, bytes], None]
# Called with (connection, intended send time of the request lost, or None if idle).
LostCallback = Callable[["ClientConnection", float | None], None]


class ClientConnection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight (no pipelining)."""

    def __init__(self, on_response: ResponseCallback, on_lost: LostCallback) -> None:
        self._on_response = on_response
        self._on_lost = on_lost
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._intended: float | None = None
        self._error_body: bytearray | None = None  # collected only for non-2xx replies
        self.usable = False

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport implements asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self.usable = True

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            raise  # a bug in our own callbacks, not a bad reply: let it surface
        except httptools.HttpParserError:
            self.close()  # a malformed reply; the request in flight is counted as lost

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        self._transport = None
        lost, self._intended = self._intended, None
        self._on_lost(self, lost)

    # -- httptools callbacks -----------------------------------------------------------------
    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        self._error_body = None if 200 <= status < 300 else bytearray()

    def on_body(self, body: bytes) -> None:
        if self._error_body is not None and len(self._error_body) < ERROR_BODY_BYTES:
            self._error_body += body[: ERROR_BODY_BYTES - len(self._error_body)]

    def on_message_complete(self) -> None:
        done = time.perf_counter()
        intended, self._intended = self._intended, None
        if intended is None:  # a reply nobody asked for: the stream is out of step
            self.close()
            return
        if not self._parser.should_keep_alive():
            self.usable = False
        error_body, self._error_body = bytes(self._error_body or b""), None
        self._on_response(self, self._parser.get_status_code(), intended, done, error_body)
        if not self.usable:
            self.close()

    # -- used by the generator ---------------------------------------------------------------
    @property
    def idle(self) -> bool:
        return self.usable and self._intended is None

    def send(self, data: bytes, intended: float) -> None:
        """Write one request; ``intended`` is its scheduled time, the origin of its latency."""
        assert self._transport is not None
        assert self._intended is None
        self._intended = intended
        self._transport.write(data)

    def close(self) -> None:
        self.usable = False
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Drop the connection now, unsent data and all."""
        self.usable = False
        if self._transport is not None:
            self._transport.abort()
