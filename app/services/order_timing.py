"""Where an order entry's time goes. One ``OrderTimer`` per order, lapped after each stage
of its path (``OrderService.submit`` reads top to bottom with the laps in it); the stages'
times and the outcome are recorded once the order is answered, and the HTTP layer records
the whole request against the SLA (``record_order_entry``).

Recorded into Prometheus histograms (``app.services.metrics``), which ``GET /metrics``
exposes and ``MetricsSummary`` reads percentiles from.
"""

from __future__ import annotations

from enum import StrEnum
from time import perf_counter

from app.services.metrics import (
    ORDER_LATENCY,
    ORDER_SLA_OVER,
    ORDER_SLA_WITHIN,
    ORDER_STAGE,
    ORDERS,
)


class Stage(StrEnum):
    AUTH = "auth"  # the API key and its inbound budget
    RISK = "risk"  # idempotency and the pre-trade risk decision (static, then Redis)
    BREAKER = "breaker"  # the broker guard's step: breaker state and a pacing token booked
    PACING = "pacing"  # waiting for that booked token
    PERSIST = "persist"  # the write-ahead and the outcome, in the order log
    BROKER = "broker"  # the broker's placement
    PUBLISH = "publish"  # an order event to its entry on the execution stream


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"  # by the broker
    DENIED = "denied"  # by the gateway: risk, the breaker, pacing
    UNKNOWN = "unknown"  # the broker's answer did not come
    REPLAYED = "replayed"  # an idempotent retry, answered as before
    ERROR = "error"  # an error answer, nothing placed (or in doubt)


# Looking a labelled series up costs more than updating it: once, here.
_STAGE_SERIES = {stage: ORDER_STAGE.labels(stage.value) for stage in Stage}
_OUTCOME_SERIES = {outcome: ORDERS.labels(outcome.value) for outcome in Outcome}


def record_stage(stage: Stage, seconds: float) -> None:
    """One observation of a stage timed outside an ``OrderTimer`` (publish)."""
    _STAGE_SERIES[stage].observe(seconds)


class OrderTimer:
    """The laps of one order. ``lap(stage)`` charges the time since the previous lap (or
    ``mark``) to ``stage``; a stage lapped twice (persist) adds up."""

    __slots__ = ("_last", "_spent", "outcome")

    def __init__(self) -> None:
        self._last = perf_counter()
        self._spent: dict[Stage, float] = {}
        self.outcome = Outcome.ERROR  # until the path says otherwise

    def mark(self) -> None:
        """Start the next lap now: the time since the last one is charged to no stage."""
        self._last = perf_counter()

    def lap(self, stage: Stage) -> None:
        now = perf_counter()
        self._spent[stage] = self._spent.get(stage, 0.0) + now - self._last
        self._last = now

    def lap_guard(self, waited_s: float) -> None:
        """The broker guard's lap: its booked wait is pacing, the rest is the breaker's step."""
        now = perf_counter()
        elapsed = now - self._last
        waited = min(max(waited_s, 0.0), elapsed)
        self._spent[Stage.BREAKER] = elapsed - waited
        self._spent[Stage.PACING] = waited
        self._last = now

    def record(self) -> None:
        """The order is answered: its stages and its outcome into the metrics."""
        for stage, seconds in self._spent.items():
            _STAGE_SERIES[stage].observe(seconds)
        _OUTCOME_SERIES[self.outcome].inc()


def record_order_entry(seconds: float, sla_target_s: float) -> None:
    """One ``POST /v1/orders`` answered, after ``seconds``: its latency and the SLA."""
    ORDER_LATENCY.observe(seconds)
    (ORDER_SLA_WITHIN if seconds <= sla_target_s else ORDER_SLA_OVER).inc()
