"""Prometheus's scrape (``/metrics``, no authentication, as scrapers expect) and the rolling
summary of the order path (admin)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.deps import AdminDep, ServicesDep
from app.http.problems import problem_responses
from app.services.observability import MetricsSummary

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
async def metrics(services: ServicesDep) -> Response:
    return Response(await services.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/metrics/summary", response_model=MetricsSummary, responses=problem_responses(403))
async def summary(_: AdminDep, services: ServicesDep) -> MetricsSummary:
    """P50/P95/P99 (ms, read off the histograms' buckets; null with no observation) of each
    stage of the order path and end to end, SLA compliance, throughput and errors: the
    whole gateway over the last ``metrics.summary_window_s``, or since the answering process
    started if that is shorter (``covered_s``)."""
    return await services.metrics.summary()
