"""Every request's id: the client's ``X-Request-ID`` if well formed, else a new one; in the
logs' context for every line of the request, and sent back on the answer."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.logs import REQUEST_ID, REQUEST_ID_HEADER, request_id_from

_HEADER = REQUEST_ID_HEADER.encode()


class RequestId:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        # The order entry fast path may have given the request its id already.
        request_id = REQUEST_ID.get() or request_id_from(dict(scope["headers"]).get(_HEADER))
        REQUEST_ID.set(request_id)
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        value = request_id.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (_HEADER, value)]
            await send(message)

        await self.app(scope, receive, send_with_id)
