"""``POST /v1/orders``, the hot path: a plain ASGI fast path in front of the whole FastAPI
app.

A well-formed order entry is served here, in one function: a trader's bearer key, a JSON
body of a stated length within the limit, a well-formed Idempotency-Key or none, and a body
that validates as an ``OrderIntent``. It is handed to the same ``OrderService.submit`` as the
FastAPI route, its answer is sent as that route sends it, its errors become the same
problem+json as the app's exception handlers make (an unexpected one included), and its
status and latency go to the same Prometheus metrics the instrumentator keeps.

Every other request to the path, which includes every malformed order and every refused
key, continues to FastAPI (with whatever body was read replayed), so its answers are exactly
FastAPI's, and the OpenAPI document still describes the route.

Why: FastAPI's middleware, routing and request handling were a large share of an order's
CPU (docs/performance.md), while an order entry needs none of their generality. The
fast path sits outside all of it, FastAPI's own outer middleware included, which is why
``ordergate serve`` runs ``create_served_app`` rather than the FastAPI app itself.

What it must still honour, as the app's middleware would (``HONOURED_MIDDLEWARE``; a test
fails when the app gains a middleware this list does not name):
- the body size limit (``BodySizeLimit``): a stated length over the limit, or a body longer
  than it said, goes on to the app, whose middleware answers 413;
- the request metrics (the instrumentator's middleware): recorded by ``record_request``
  under the same series, and the order entry's own (``record_order_entry``) as the app's
  metrics callback records them;
- errors: the one error table (``app.http.problems``), an unexpected error included.
- the request id (``RequestId``): taken or made here, in the logs' context, sent back;
A future cross-cutting concern is added here as well as to the app.
"""

from __future__ import annotations

import logging
import re
from time import perf_counter

from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.deps import RATE_LIMIT_TAKEN, Services, authorize
from app.domain import decimals
from app.domain.errors import GatewayError, RateLimited
from app.domain.orders import CLIENT_ORDER_ID_PATTERN, OrderIntent
from app.domain.rate_limits import RouteClass
from app.http.bodies import read_body, replaying
from app.http.problems import error_response
from app.logs import ACCOUNT, REQUEST_ID, REQUEST_ID_HEADER, request_id_from
from app.routers.orders import ORDERS_PATH
from app.services.auth import Role
from app.services.metrics import record_request
from app.services.order_timing import OrderTimer, Stage, record_order_entry

log = logging.getLogger("ordergate")

_idempotency_key = re.compile(CLIENT_ORDER_ID_PATTERN[1:-1])  # fullmatch: "$" allows "\n"


# The app's middleware whose concerns the fast path honours itself (see the docstring).
HONOURED_MIDDLEWARE = frozenset(
    {"BodySizeLimit", "PrometheusInstrumentatorMiddleware", "RequestId"}
)


class OrderEntryFastPath:
    """ASGI app in front of ``app``: serves well-formed ``POST /v1/orders``, passes on
    everything else (the lifespan included)."""

    def __init__(self, app: Starlette, *, max_body_bytes: int, sla_target_s: float) -> None:
        self.app = app
        self._max_body_bytes = max_body_bytes
        self._sla_target_s = sla_target_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != ORDERS_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        timer = OrderTimer()
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
        # Kept if the request goes on to the app.
        REQUEST_ID.set(request_id_from(headers.get(b"x-request-id")))
        services: Services = self.app.state.services
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
        ACCOUNT.set(principal.account)
        try:
            # The key's budget, before anything else is done for the request.
            limit_headers = await services.limits.take(principal, RouteClass.ORDER_ENTRY)
        except RateLimited as refused:
            await self._answer(error_response(refused), scope, receive, send, started)
            return
        timer.lap(Stage.AUTH)
        # Taken once: a request passed on to FastAPI below is not charged again there.
        scope.setdefault("state", {})[RATE_LIMIT_TAKEN] = limit_headers

        received, body = await read_body(receive, self._max_body_bytes)
        replayed = replaying(received, receive)
        if received[-1]["type"] != "http.request" or len(body) > self._max_body_bytes:
            await self.app(scope, replayed, send)  # gone, or longer than it said: FastAPI's
            return
        try:
            intent = OrderIntent.model_validate(decimals.loads(body))
        except ValueError:  # not JSON, or not a valid intent (a ValidationError)
            await self.app(scope, replayed, send)  # FastAPI's 422, word for word
            return

        timer.mark()  # reading and parsing the body: in the end-to-end time only
        try:
            answer = await services.orders.submit(
                principal.account, intent, None if key is None else key.decode("latin-1"), timer
            )
            response = Response(
                answer.body,
                status_code=answer.status,
                media_type=answer.media_type,
                headers={**limit_headers, **(answer.headers or {})},
            )
        except Exception as exc:
            response = error_response(exc)
            for name, value in limit_headers.items():
                response.headers.setdefault(name, value)
        await self._answer(response, scope, replayed, send, started)

    async def _answer(
        self, response: Response, scope: Scope, receive: Receive, send: Send, started: float
    ) -> None:
        response.headers[REQUEST_ID_HEADER] = REQUEST_ID.get() or ""
        await response(scope, receive, send)
        elapsed = perf_counter() - started
        record_request(ORDERS_PATH, "POST", f"{response.status_code // 100}xx", elapsed)
        record_order_entry(elapsed, self._sla_target_s)


def is_json(content_type: str | None) -> bool:
    """Whether FastAPI would parse the body as JSON (no content type counts)."""
    if content_type is None:
        return True
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )
