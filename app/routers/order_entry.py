"""``POST /v1/orders``, the hot path: a plain ASGI lane in front of FastAPI's stack.

A well-formed order entry is served here, in one function: a trader's bearer key, a JSON
body of a stated length within the limit, a well-formed Idempotency-Key or none, and a body
that validates as an ``OrderIntent``. It is handed to the same ``OrderService.submit`` as the
FastAPI route, its answer is sent as that route sends it, its errors become the same
problem+json as the app's exception handlers make, and its status and latency go to the
same Prometheus metrics the instrumentator keeps.

Every other request to the path, which includes every malformed order and every refused
key, continues to FastAPI (with whatever body was read replayed), so its answers are exactly
FastAPI's, and the OpenAPI document still describes the route.

Why: FastAPI's middleware, routing and request handling were about a third of an order's
CPU, while an order entry needs none of their generality.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from time import perf_counter

from prometheus_fastapi_instrumentator.metrics import Info
from pydantic import ValidationError
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.deps import Services, authorize
from app.domain.errors import GatewayError
from app.domain.orders import CLIENT_ORDER_ID_PATTERN, OrderIntent
from app.routers.asgi import read_body, replaying
from app.routers.orders import ORDERS_PATH
from app.routers.problems import problem_response, unavailable_response
from app.services.auth import Role

Instrumentation = Callable[[Info], None]

_idempotency_key = re.compile(CLIENT_ORDER_ID_PATTERN[1:-1])  # fullmatch: "$" allows "\n"


class OrderEntryLane:
    """ASGI middleware: serves well-formed ``POST /v1/orders``, passes on everything else."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        instrumentations: Sequence[Instrumentation],
    ) -> None:
        self.app = app
        self._max_body_bytes = max_body_bytes
        self._instrumentations = tuple(instrumentations)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != ORDERS_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        started = perf_counter()
        raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
        headers = dict(raw_headers)
        length = headers.get(b"content-length", b"")
        key = headers.get(b"idempotency-key")
        content_type = headers.get(b"content-type")
        if (
            len(headers) != len(raw_headers)  # a repeated header: FastAPI decides
            or not length.isdigit()  # chunked, or a bad length: the size limit decides
            or int(length) > self._max_body_bytes
            or not is_json(None if content_type is None else content_type.decode("latin-1"))
            or (key is not None and not _idempotency_key.fullmatch(key.decode("latin-1")))
        ):
            await self.app(scope, receive, send)
            return
        services: Services = scope["app"].state.services
        authorization = headers.get(b"authorization")
        try:
            principal = await authorize(
                services,
                None if authorization is None else authorization.decode("latin-1"),
                Role.TRADER,
            )
        except (GatewayError, RedisError, DBAPIError):
            # Refused, or not checked: FastAPI's dependency answers 401, 403 or 503.
            await self.app(scope, receive, send)
            return

        received, body = await read_body(receive, self._max_body_bytes)
        replayed = replaying(received, receive)
        if received[-1]["type"] != "http.request" or len(body) > self._max_body_bytes:
            await self.app(scope, replayed, send)  # gone, or longer than it said: FastAPI's
            return
        try:
            intent = OrderIntent.model_validate_json(body)
        except ValidationError:
            await self.app(scope, replayed, send)  # FastAPI's 422, word for word
            return

        status = 500  # what the metrics say if an unexpected error escapes below
        try:
            try:
                answer = await services.orders.submit(
                    principal.account, intent, None if key is None else key.decode("latin-1")
                )
                response = Response(
                    answer.body, status_code=answer.status, media_type=answer.media_type
                )
            except GatewayError as error:
                response = problem_response(error)
            except (RedisError, DBAPIError) as exc:
                response = unavailable_response(exc)
            status = response.status_code
            await response(scope, replayed, send)
        finally:
            # Unexpected errors propagate to the app's 500 handler (ServerErrorMiddleware).
            self._observe(scope, status, perf_counter() - started)

    def _observe(self, scope: Scope, status: int, duration_s: float) -> None:
        """Record the request as the instrumentator would have (handler, method, 2xx...)."""
        info = Info(
            request=Request(scope),
            response=None,
            method="POST",
            modified_handler=ORDERS_PATH,
            modified_status=f"{str(status)[0]}xx",
            modified_duration=duration_s,
        )
        for instrumentation in self._instrumentations:
            instrumentation(info)


def is_json(content_type: str | None) -> bool:
    """Whether FastAPI would parse the body as JSON (no content type counts)."""
    if content_type is None:
        return True
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )
