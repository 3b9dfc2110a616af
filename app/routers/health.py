"""Liveness and readiness (no authentication)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.deps import ServicesDep
from app.services.health import OK

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and serving."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "a dependency is not reachable"}})
async def readyz(services: ServicesDep) -> JSONResponse:
    """Redis, the database and the broker answer."""
    status = await services.health.check()
    ready = all(v == OK for v in status.values())
    return JSONResponse({"ready": ready, "checks": status}, status_code=200 if ready else 503)
