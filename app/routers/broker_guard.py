"""The broker's protection, as it stands: the circuit breaker and the pacing buckets."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from app.deps import AdminDep, PrincipalDep, ServicesDep
from app.domain.broker_guard import BreakerState, Endpoint
from app.http.problems import problem_responses

router = APIRouter(prefix="/v1", tags=["broker protection"])


class BreakerOut(BaseModel):
    """The broker's circuit breaker as it stands."""

    model_config = ConfigDict(from_attributes=True)

    broker: str
    state: BreakerState
    consecutive_failures: int
    trials_admitted: int
    trials_succeeded: int
    retry_after_ms: int
    times_opened: int
    times_closed: int


class BucketOut(BaseModel):
    """One pacing bucket as it stands."""

    model_config = ConfigDict(from_attributes=True)

    endpoint: Endpoint
    rate: float
    burst: int
    tokens: float
    queued: int
    taken: int
    waited: int
    throttled: int


class PacingOut(BaseModel):
    broker: str
    max_wait_ms: float
    buckets: list[BucketOut]


@router.get("/breakers", response_model=list[BreakerOut], responses=problem_responses(503))
async def list_breakers(_: PrincipalDep, services: ServicesDep) -> list[BreakerOut]:
    """Each broker's circuit breaker (this gateway has one broker)."""
    breaker, _buckets = await services.guard.read()
    return [BreakerOut.model_validate(breaker)]


@router.get("/pacing", response_model=PacingOut, responses=problem_responses(403, 503))
async def get_pacing(_: AdminDep, services: ServicesDep) -> PacingOut:
    """Every pacing bucket of the broker: its rate and burst, tokens now, callers waiting,
    and how many calls took a token at once, waited for one, or were refused."""
    _breaker, buckets = await services.guard.read()
    return PacingOut(
        broker=services.guard.broker,
        max_wait_ms=services.settings.broker_guard.max_wait_ms,
        buckets=[BucketOut.model_validate(bucket) for bucket in buckets],
    )
