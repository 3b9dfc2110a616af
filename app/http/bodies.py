"""Request bodies: reading one within a limit, replaying what was read, the middleware that
answers 413 past the limit, and the route class whose JSON keeps decimals exact."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.domain import decimals
from app.domain.errors import PayloadTooLarge
from app.http.problems import problem_response


class ExactJsonRequest(Request):
    """A request whose JSON body keeps each number's literal text (``decimals.loads``):
    FastAPI's own ``json.loads`` made every fraction a binary float first."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = decimals.loads(await self.body())
        return self._json


class ExactJsonRoute(APIRoute):
    """``APIRouter(route_class=ExactJsonRoute)``: the route reads ``ExactJsonRequest``s
    (FastAPI's documented way to change how a route reads its request)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def exact_json_handler(request: Request) -> Response:
            return await handler(ExactJsonRequest(request.scope, request.receive))

        return exact_json_handler


async def read_body(receive: Receive, max_bytes: int) -> tuple[list[Message], bytes]:
    """The messages read and the body they carry. Stops at the body's end, at a message that
    is not part of it (the client went away), or once the body is past ``max_bytes``."""
    messages: list[Message] = []
    body = b""
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        body += message.get("body", b"")
        if len(body) > max_bytes or not message.get("more_body", False):
            break
    return messages, body


def replaying(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that hands out ``messages`` again, then the real ones."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


class BodySizeLimit:
    """Answer 413 before reading more than ``max_bytes`` of a request body (or, on a path
    named in ``larger``, its own limit: a feed's batch of ticks)."""

    def __init__(self, app: ASGIApp, max_bytes: int, larger: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.larger = larger or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.larger.get(scope["path"], self.max_bytes)
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None:
            if not length.isdigit() or int(length) > max_bytes:
                await self._too_large(scope, receive, send, max_bytes)
                return
            await self.app(scope, receive, send)  # the server holds it to Content-Length
            return
        # Chunked: read it here (at most max_bytes), then hand the app what was read.
        messages, body = await read_body(receive, max_bytes)
        if len(body) > max_bytes:
            await self._too_large(scope, receive, send, max_bytes)
            return
        await self.app(scope, replaying(messages, receive), send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, max_bytes: int) -> None:
        error = PayloadTooLarge(f"request bodies are limited to {max_bytes} bytes")
        await problem_response(error)(scope, receive, send)
