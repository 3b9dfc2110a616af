"""Prometheus's scrape (``/metrics``, no authentication, as scrapers expect) and the rolling
summary of the order path (admin)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict

from app.deps import AdminDep, ServicesDep
from app.http.problems import problem_responses

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
async def metrics(services: ServicesDep) -> Response:
    return Response(await services.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


class LatencyOut(BaseModel):
    """Percentiles read off the histogram's buckets (interpolated within one), in ms;
    null with no observation in the window."""

    model_config = ConfigDict(from_attributes=True)

    count: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class SummaryOut(BaseModel):
    """The whole gateway (every worker) over the last ``window_s`` seconds, or since the
    answering process started if that is shorter (``covered_s``)."""

    model_config = ConfigDict(from_attributes=True)

    window_s: float
    covered_s: float
    sla_target_ms: float
    within_sla: int
    over_sla: int
    sla_compliance: float | None
    orders_per_s: float
    reports_per_s: float
    errors_per_s: float
    outcomes: dict[str, int]
    errors: dict[str, int]
    end_to_end: LatencyOut
    stages: dict[str, LatencyOut]


@router.get("/v1/metrics/summary", response_model=SummaryOut, responses=problem_responses(403))
async def summary(_: AdminDep, services: ServicesDep) -> SummaryOut:
    """P50/P95/P99 of each stage of the order path and end to end, SLA compliance,
    throughput and errors, over a rolling window (``metrics.summary_window_s``)."""
    return SummaryOut.model_validate(await services.metrics.summary())
