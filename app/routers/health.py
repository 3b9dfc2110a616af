"""Liveness and readiness (no authentication)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and serving."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "a dependency is not reachable"}})
async def readyz(services: ServicesDep) -> JSONResponse:
    """Redis, the database and the broker answer."""

    async def redis_ok() -> None:
        await services.redis.ping()

    async def database_ok() -> None:
        async with services.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    checks = {"redis": redis_ok(), "database": database_ok(), "broker": services.broker.ping()}
    results = await asyncio.gather(
        *(asyncio.wait_for(c, timeout=1.0) for c in checks.values()), return_exceptions=True
    )
    status = {
        name: "ok" if not isinstance(r, BaseException) else f"unavailable: {r!r}"[:200]
        for name, r in zip(checks, results, strict=True)
    }
    ready = all(v == "ok" for v in status.values())
    return JSONResponse({"ready": ready, "checks": status}, status_code=200 if ready else 503)
