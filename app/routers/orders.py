"""Order endpoints: parse, authorise, call the order service, shape the answer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Response

from app.deps import PrincipalDep, ServicesDep, TraderDep
from app.domain.orders import CLIENT_ORDER_ID_PATTERN, SYMBOL_PATTERN, OrderIntent
from app.domain.status import OrderStatus
from app.domain.views import OrderPage, OrderView
from app.http.bodies import ExactJsonRoute
from app.http.problems import problem_responses

ORDERS_PATH = "/v1/orders"
router = APIRouter(prefix=ORDERS_PATH, tags=["orders"], route_class=ExactJsonRoute)

OrderId = Annotated[str, Path(max_length=64)]


@router.post(
    "",
    status_code=201,
    response_model=OrderView,
    responses=problem_responses(403, 409, 413, 504, 503),
)
async def place_order(
    intent: OrderIntent,
    principal: TraderDep,
    services: ServicesDep,
    limits: Response,
    idempotency_key: Annotated[str | None, Header(pattern=CLIENT_ORDER_ID_PATTERN)] = None,
) -> Response:
    """Place an order. A retry with the same client_order_id or Idempotency-Key gets the
    first answer again (with `Idempotent-Replayed: true`); the same key with a different
    order gets 422 `idempotency.conflict`."""
    # Well-formed orders are served by OrderEntryFastPath, in front of FastAPI, with the same
    # service call; this route serves the rest (and documents the operation).
    answer = await services.orders.submit(principal.account, intent, idempotency_key)
    # A Response returned as is leaves out the headers dependencies set (RateLimit).
    headers = {**limits.headers, **(answer.headers or {})}
    return Response(answer.body, answer.status, headers=headers, media_type=answer.media_type)


@router.get("", response_model=OrderPage, responses=problem_responses())
async def list_orders(
    principal: PrincipalDep,
    services: ServicesDep,
    status: Annotated[list[OrderStatus] | None, Query()] = None,
    # The same form as in an order (upper case): "aapl" is refused here as it is there.
    symbol: Annotated[str | None, Query(pattern=SYMBOL_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> OrderPage:
    """The account's orders, newest first; pass `next_cursor` back as `cursor`."""
    orders, next_cursor = await services.orders.list_orders(
        principal.account, statuses=status, symbol=symbol, cursor=cursor, limit=limit
    )
    return OrderPage(items=[OrderView.of(o) for o in orders], next_cursor=next_cursor)


@router.get("/{order_id}", response_model=OrderView, responses=problem_responses(404))
async def get_order(order_id: OrderId, principal: PrincipalDep, services: ServicesDep) -> OrderView:
    return OrderView.of(await services.orders.get(principal.account, order_id))


@router.delete(
    "/{order_id}", response_model=OrderView, responses=problem_responses(403, 404, 409, 504)
)
async def cancel_order(order_id: OrderId, principal: TraderDep, services: ServicesDep) -> OrderView:
    """Cancel an open order; 409 when it is already final."""
    return OrderView.of(await services.orders.cancel(principal.account, order_id))


@router.delete("", response_model=list[OrderView], responses=problem_responses(403))
async def cancel_all_orders(principal: TraderDep, services: ServicesDep) -> list[OrderView]:
    """Cancel every open order of the account."""
    return [OrderView.of(o) for o in await services.orders.cancel_all(principal.account)]
