"""What routers get injected: the lifespan-owned services and the caller's identity."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncEngine

from app.brokers.simulated import SimulatedBroker
from app.config import Settings
from app.domain.errors import NotAuthenticated
from app.services.auth import ApiKeyService, Principal, Role
from app.services.orders import OrderService
from app.services.risk import RiskService
from app.services.risk_controls import RiskControlService
from app.storage.redis_mux import MultiplexedRedis


@dataclass(slots=True)
class Services:
    settings: Settings
    redis: MultiplexedRedis
    engine: AsyncEngine
    broker: SimulatedBroker
    orders: OrderService
    risk: RiskService
    risk_controls: RiskControlService
    keys: ApiKeyService


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


_bearer = HTTPBearer(auto_error=False, description="API key issued by `ordergate keys create`")


async def _authenticate(
    request: Request, credentials: HTTPAuthorizationCredentials | None
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise NotAuthenticated("send Authorization: Bearer <api key>")
    services: Services = request.app.state.services
    return await services.keys.authenticate(credentials.credentials)


def requiring(role: Role) -> Callable[..., Awaitable[Principal]]:
    """The caller's identity, which must hold at least ``role``. One flat dependency per
    role (not role -> principal -> bearer): fewer layers for FastAPI on every request."""

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    ) -> Principal:
        principal = await _authenticate(request, credentials)
        principal.require(role)
        return principal

    return dependency


ServicesDep = Annotated[Services, Depends(get_services)]
PrincipalDep = Annotated[Principal, Depends(requiring(Role.VIEWER))]
TraderDep = Annotated[Principal, Depends(requiring(Role.TRADER))]
AdminDep = Annotated[Principal, Depends(requiring(Role.ADMIN))]
