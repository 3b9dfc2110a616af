"""What routers get injected: the lifespan-owned services and the caller's identity."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy.ext.asyncio import AsyncEngine

from app.brokers.simulated import SimulatedBroker
from app.config import Settings
from app.domain.errors import NotAuthenticated
from app.domain.rate_limits import route_class
from app.logs import ACCOUNT
from app.redisio.multiplexed import MultiplexedRedis
from app.services.auth import ApiKeyService, Principal, Role
from app.services.broker_guard import BrokerGuard
from app.services.health import DependencyChecks
from app.services.marketdata import MarketDataIngest, MarketDataQueries
from app.services.observability import GatewayMetrics
from app.services.orders import OrderService
from app.services.rate_limits import InboundLimits
from app.services.risk import RiskService
from app.services.risk_controls import RiskControlService
from app.services.signals import SignalQueries
from app.services.stream_session import ExecutionFeed
from app.services.symbols import SymbolCatalog


@dataclass(slots=True)
class Services:
    settings: Settings
    redis: MultiplexedRedis
    engine: AsyncEngine
    broker: SimulatedBroker
    guard: BrokerGuard
    limits: InboundLimits
    orders: OrderService
    symbols: SymbolCatalog
    risk: RiskService
    risk_controls: RiskControlService
    keys: ApiKeyService
    executions: ExecutionFeed
    marketdata: MarketDataIngest
    marketdata_queries: MarketDataQueries
    signals: SignalQueries
    health: DependencyChecks
    metrics: GatewayMetrics


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


BEARER_SCHEME = "HTTPBearer"
# The RateLimit headers of a request already charged to its key's budget, in the ASGI
# scope's state: for its error answer, and so that a request the order entry fast path
# passes on to FastAPI is not charged twice.
RATE_LIMIT_TAKEN = "ordergate.rate_limit_taken"


async def authorize(services: Services, authorization: str | None, role: Role) -> Principal:
    """The caller of an ``Authorization: Bearer <api key>`` header, who must hold at least
    ``role``: else ``NotAuthenticated`` (401) or ``Forbidden`` (403). The header is read as
    FastAPI's HTTPBearer reads it, without a sub-dependency's cost on every request."""
    scheme, key = get_authorization_scheme_param(authorization)
    if not key or scheme.lower() != "bearer":
        raise NotAuthenticated("send Authorization: Bearer <api key>")
    principal = await services.keys.authenticate(key)
    principal.require(role)
    return principal


def requiring(role: Role) -> Callable[..., Awaitable[Principal]]:
    """The caller's identity, which must hold at least ``role``. One flat dependency per
    role: fewer layers for FastAPI on every request. ``document_bearer_auth`` declares it
    in the OpenAPI document."""

    async def dependency(request: Request, response: Response) -> Principal:
        services: Services = request.app.state.services
        principal = await authorize(services, request.headers.get("authorization"), role)
        ACCOUNT.set(principal.account)  # on every log line of the request from here on
        # The key's budget, before anything else is done for the request.
        taken: dict[str, str] | None = request.scope.get("state", {}).get(RATE_LIMIT_TAKEN)
        if taken is None:
            kind = route_class(request.method, request.url.path)
            taken = await services.limits.take(principal, kind)
            request.scope.setdefault("state", {})[RATE_LIMIT_TAKEN] = taken  # for errors
        response.headers.update(taken)
        return principal

    return dependency


def document_bearer_auth(app: FastAPI) -> None:
    """Declare the bearer API key in the OpenAPI document, on every operation that documents
    a 401 answer (``problem_responses`` does, on every route that depends on ``requiring``)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
            schemes[BEARER_SCHEME] = {
                "type": "http",
                "scheme": "bearer",
                "description": "API key issued by `ordergate keys create`",
            }
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    if "401" in operation.get("responses", {}):
                        operation["security"] = [{BEARER_SCHEME: []}]
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


ServicesDep = Annotated[Services, Depends(get_services)]
PrincipalDep = Annotated[Principal, Depends(requiring(Role.VIEWER))]
TraderDep = Annotated[Principal, Depends(requiring(Role.TRADER))]
AdminDep = Annotated[Principal, Depends(requiring(Role.ADMIN))]
