"""The gateway's own Prometheus metrics, and the HTTP request metrics the instrumentator
records through ``record_request`` (see ``app.main``).

Under ``serve --workers N`` prometheus_client's multiprocess mode adds up every worker's
values (``PROMETHEUS_MULTIPROC_DIR``, set by ``ordergate serve``).
"""

from __future__ import annotations

from functools import cache

from prometheus_client import Counter, Gauge, Histogram

# Fine enough to read a percentile of a few milliseconds off (the summary interpolates
# within a bucket, as histogram_quantile does), with the SLA's 150 and 200 ms as edges.
STAGE_BUCKETS_S = (
    0.0001, 0.00015, 0.0002, 0.0003, 0.0005, 0.00075,
    0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075,
    0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

ORDER_LATENCY = Histogram(
    "ordergate_order_latency_seconds",
    "POST /v1/orders end to end: the request's first byte handled to the answer sent",
    buckets=STAGE_BUCKETS_S,
)
ORDER_STAGE = Histogram(
    "ordergate_order_stage_seconds",
    "Time an order spent in each stage of its path (publish: event to its stream entry)",
    ["stage"],
    buckets=STAGE_BUCKETS_S,
)
ORDER_SLA = Counter(
    "ordergate_order_sla",
    "Order entries answered within the SLA's target, or over it",
    ["result"],
)
ORDER_SLA_WITHIN = ORDER_SLA.labels(result="within")
ORDER_SLA_OVER = ORDER_SLA.labels(result="over")
ORDERS = Counter(
    "ordergate_orders",
    "Orders placed, by outcome: accepted, rejected (broker), denied (gateway), unknown, "
    "replayed, error",
    ["outcome"],
)
ORDERS_IN_FLIGHT = Gauge(
    "ordergate_orders_in_flight",
    "Order entries being handled now",
    multiprocess_mode="livesum",
)
EXECUTION_REPORTS = Counter(
    "ordergate_execution_reports", "Execution reports published to the streams"
)
ERRORS = Counter("ordergate_errors", "Problem answers, by problem code", ["code"])

STREAM_SUBSCRIBERS = Gauge(
    "ordergate_stream_subscribers",
    "WebSocket connections to /v1/stream now",
    multiprocess_mode="livesum",
)
STREAM_SLOW_CONSUMERS = Counter(
    "ordergate_stream_slow_consumers_dropped",
    "WebSocket connections closed for falling too far behind (they can resume)",
)
SIGNAL_CYCLE = Histogram(
    "ordergate_signal_cycle_seconds",
    "One signal cycle: md:events entries read to signals published",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0),
)

RISK_DECISIONS = Counter(
    "ordergate_risk_decisions",
    "Pre-trade risk decisions, by result: accepted, or the reject code",
    ["result"],
)
RISK_ACCEPTED = RISK_DECISIONS.labels(result="accepted")

STRATEGY_ORDERS = Counter(
    "ordergate_strategy_orders",
    "The strategy's orders, by answer: status or problem code",
    ["result"],
)
STRATEGY_TICK_TO_ACK = Histogram(
    "ordergate_strategy_tick_to_ack_seconds",
    "From the signal cycle's first tick reaching the gateway to the strategy's order accepted",
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0),
)

MARKETDATA_TICKS = Counter("ordergate_marketdata_ticks", "Ticks the processor took in, checked")
MARKETDATA_DEAD_LETTERS = Counter(
    "ordergate_marketdata_dead_letters",
    "Ticks that failed a check (in the dead-letter stream), by reason",
    ["reason"],
)

# The instrumentator's default request metrics, under their names and labels, but with
# latency buckets fine enough for a gateway answering in milliseconds (its own start at
# 100 ms); request and response sizes are left out (two more histograms per request).
REQUEST_LABELS = ("handler", "method", "status")
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0)
HTTP_REQUESTS = Counter(
    "http_requests_total", "Total number of requests by method, status and handler.", REQUEST_LABELS
)
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "Duration of HTTP requests in seconds",
    REQUEST_LABELS,
    buckets=LATENCY_BUCKETS_S,
)


@cache
def _series(handler: str, method: str, status: str) -> tuple[Counter, Histogram]:
    # Looking a labelled series up costs more than updating it; the set of routes,
    # methods and status classes is small and fixed.
    return (
        HTTP_REQUESTS.labels(handler, method, status),
        HTTP_LATENCY.labels(handler, method, status),
    )


def record_request(handler: str, method: str, status_class: str, duration_s: float) -> None:
    """Count one answered request (``status_class``: "2xx", "4xx"...) and its latency."""
    requests, latency = _series(handler, method, status_class)
    requests.inc()
    latency.observe(duration_s)


BREAKER_TRANSITIONS = Counter(
    "ordergate_breaker_transitions",
    "Circuit breaker state changes, by broker and the state entered",
    ["broker", "state"],
)
BROKER_GUARD_REFUSALS = Counter(
    "ordergate_broker_guard_refusals",
    "Broker calls refused before they were made: breaker open, or paced out",
    ["broker", "endpoint", "reason"],
)
PACING_WAIT = Histogram(
    "ordergate_pacing_wait_seconds",
    "How long broker calls waited for a pacing token (0 when one was there)",
    ["broker", "endpoint"],
    buckets=(0.0, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
