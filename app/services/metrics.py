"""The gateway's own Prometheus metrics (HTTP metrics come from the instrumentator).

Under ``serve --workers N`` prometheus_client's multiprocess mode adds up every worker's
values (``PROMETHEUS_MULTIPROC_DIR``, set by ``ordergate serve``).
"""

from __future__ import annotations

from prometheus_client import Counter

RISK_DECISIONS = Counter(
    "ordergate_risk_decisions",
    "Pre-trade risk decisions, by result: accepted, or the reject code",
    ["result"],
)
RISK_ACCEPTED = RISK_DECISIONS.labels(result="accepted")
