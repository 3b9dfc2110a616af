"""What ``GET /metrics`` exposes beyond the processes' own metrics, and the rolling summary
``GET /v1/metrics/summary`` (and ``ordergate status``) shows.

At each scrape the state kept outside the processes is read then: whether Redis and the
database answer, each breaker's state and each pacing bucket's tokens, and how long market
data has waited for the processor. The SLA's compliance ratio is derived from its counters.

The summary's window: each gateway process keeps a snapshot of the (whole gateway's)
histograms and counters every ``summary_step_s``; a summary is now minus the snapshot one
window ago, so it covers the last ``summary_window_s`` (or since the process started, if
that is shorter; ``covered_s`` says which).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import Metric, generate_latest
from prometheus_client.core import GaugeMetricFamily
from redis.exceptions import RedisError

from app.config import MetricsSettings
from app.domain.broker_guard import BreakerState
from app.domain.histograms import BucketCounts, quantile
from app.services.broker_guard import BrokerGuard
from app.services.health import CHECK_TIMEOUT_S, OK, DependencyChecks
from app.services.metrics_reader import (
    Families,
    Readings,
    collect,
    forget_dead_processes,
    readings,
)
from app.services.order_timing import Outcome, Stage
from app.storage.redis.marketdata import MarketDataStore

log = logging.getLogger(__name__)

LATENCY = "ordergate_order_latency_seconds"
STAGES = "ordergate_order_stage_seconds"
SLA = "ordergate_order_sla"
ORDERS = "ordergate_orders"
REPORTS = "ordergate_execution_reports"
ERRORS = "ordergate_errors"
SUMMARY_FAMILIES = frozenset({LATENCY, STAGES, SLA, ORDERS, REPORTS, ERRORS})

BREAKER_STATE_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


@dataclass(frozen=True, slots=True)
class LatencySummary:
    count: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True, slots=True)
class MetricsSummary:
    window_s: float
    covered_s: float
    sla_target_ms: float
    within_sla: int
    over_sla: int
    sla_compliance: float | None  # within / all; None with no order in the window
    orders_per_s: float
    reports_per_s: float
    errors_per_s: float
    outcomes: dict[str, int]
    errors: dict[str, int]  # by problem code
    end_to_end: LatencySummary
    stages: dict[str, LatencySummary]


class GatewayMetrics:
    def __init__(
        self,
        settings: MetricsSettings,
        multiprocess_dir: Path | None,
        *,
        checks: DependencyChecks,
        guard: BrokerGuard,
        marketdata: MarketDataStore,
    ) -> None:
        self._settings = settings
        self._dir = multiprocess_dir
        self._checks = checks
        self._guard = guard
        self._marketdata = marketdata
        steps = int(settings.summary_window_s / settings.summary_step_s) + 2
        self._snapshots: deque[tuple[float, Readings]] = deque(maxlen=steps)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._snapshot()  # the first window starts with the process
        self._task = asyncio.create_task(self._keep_snapshots(), name="metrics-snapshots")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # -- GET /metrics ---------------------------------------------------------------------
    async def exposition(self) -> bytes:
        """The Prometheus text exposition of the whole gateway, read now."""
        now_read = await asyncio.gather(self._dependencies(), self._guard_state(), self._lag())
        families = await asyncio.to_thread(collect, self._dir)
        extra = [family for group in now_read for family in group]
        extra += self._sla_families(readings(families, frozenset({SLA})))
        return generate_latest(Families([*families, *extra]))

    async def _dependencies(self) -> list[Metric]:
        up = GaugeMetricFamily(
            "ordergate_dependency_up",
            "Whether the dependency answered this scrape (1) or not (0)",
            labels=["dependency"],
        )
        for name, status in (await self._checks.check()).items():
            up.add_metric([name], 1.0 if status == OK else 0.0)
        return [up]

    async def _guard_state(self) -> list[Metric]:
        try:
            breaker, buckets = await asyncio.wait_for(self._guard.read(), CHECK_TIMEOUT_S)
        except (RedisError, OSError, TimeoutError) as exc:  # dependency_up says why
            log.debug("breaker state not read for the metrics: %r", exc)
            return []
        state = GaugeMetricFamily(
            "ordergate_breaker_state",
            "The broker's circuit breaker: 0 closed, 1 half_open, 2 open",
            labels=["broker"],
        )
        state.add_metric([breaker.broker], BREAKER_STATE_VALUE[breaker.state])
        tokens = GaugeMetricFamily(
            "ordergate_pacing_tokens",
            "Tokens in each pacing bucket now (below 0: callers booked and waiting)",
            labels=["broker", "endpoint"],
        )
        for bucket in buckets:
            tokens.add_metric([breaker.broker, bucket.endpoint.value], bucket.tokens)
        return [state, tokens]

    async def _lag(self) -> list[Metric]:
        try:
            lag = await asyncio.wait_for(self._marketdata.backlog_age_s(), CHECK_TIMEOUT_S)
        except (RedisError, OSError, TimeoutError) as exc:
            log.debug("market-data lag not read for the metrics: %r", exc)
            return []
        return [
            GaugeMetricFamily(
                "ordergate_marketdata_lag_seconds",
                "How long the oldest tick batch not yet processed has waited (0: none waits)",
                value=lag,
            )
        ]

    def _sla_families(self, sla: Readings) -> list[Metric]:
        counts = sla.counter(SLA)
        within, over = counts.get(("within",), 0.0), counts.get(("over",), 0.0)
        ratio = within / (within + over) if within + over else 1.0
        return [
            GaugeMetricFamily(
                "ordergate_order_sla_target_seconds",
                "The order entry SLA's target (metrics.sla_target_ms)",
                value=self._settings.sla_target_ms / 1000,
            ),
            GaugeMetricFamily(
                "ordergate_order_sla_compliance_ratio",
                "Order entries answered within the SLA's target, of all, since the start "
                "(1 before any); a window's ratio: rate() of ordergate_order_sla_total",
                value=ratio,
            ),
        ]

    # -- GET /v1/metrics/summary --------------------------------------------------------
    async def _keep_snapshots(self) -> None:
        while True:
            await asyncio.sleep(self._settings.summary_step_s)
            try:
                await self._snapshot()
            except Exception:  # a metrics file being written; the next step tries again
                log.exception("metrics snapshot failed")

    async def _snapshot(self) -> None:
        if self._dir is not None:
            await asyncio.to_thread(forget_dead_processes, self._dir)
        self._snapshots.append((time.monotonic(), await self._read()))

    async def _read(self) -> Readings:
        families = await asyncio.to_thread(collect, self._dir)
        return readings(families, SUMMARY_FAMILIES)

    async def summary(self) -> MetricsSummary:
        now, current = time.monotonic(), await self._read()
        since = now - self._settings.summary_window_s
        at, base = next(
            ((at, r) for at, r in self._snapshots if at >= since),
            (now, current),
        )
        covered = max(now - at, 1e-9)

        def histogram(name: str, labels: tuple[str, ...] = ()) -> LatencySummary:
            counts = current.histogram(name, labels)
            if counts is None:
                return LatencySummary(0, None, None, None)
            return _latency(counts.minus(base.histogram(name, labels)))

        def counter(name: str) -> dict[str, int]:
            earlier = base.counter(name)
            return {
                ",".join(key) if key else "": max(0, round(value - earlier.get(key, 0.0)))
                for key, value in current.counter(name).items()
            }

        sla = counter(SLA)
        within, over = sla.get("within", 0), sla.get("over", 0)
        outcomes = counter(ORDERS)
        errors = {code: n for code, n in counter(ERRORS).items() if n}
        return MetricsSummary(
            window_s=self._settings.summary_window_s,
            covered_s=round(covered, 3),
            sla_target_ms=self._settings.sla_target_ms,
            within_sla=within,
            over_sla=over,
            sla_compliance=within / (within + over) if within + over else None,
            orders_per_s=sum(outcomes.values()) / covered,
            reports_per_s=sum(counter(REPORTS).values()) / covered,
            errors_per_s=sum(errors.values()) / covered,
            outcomes={o.value: outcomes.get(o.value, 0) for o in Outcome},
            errors=errors,
            end_to_end=histogram(LATENCY),
            stages={stage.value: histogram(STAGES, (stage.value,)) for stage in Stage},
        )


def _latency(counts: BucketCounts) -> LatencySummary:
    def ms(q: float) -> float | None:
        value = quantile(q, counts)
        return None if value is None else round(value * 1000, 3)

    return LatencySummary(round(counts.count), ms(0.50), ms(0.95), ms(0.99))
