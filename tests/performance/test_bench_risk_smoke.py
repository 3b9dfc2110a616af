"""``python -m bench risk`` at a tiny size, against the suite's real Redis.

These keep the benchmark working: every scheduled call made and counted, both targets measured,
orders accepted, Redis left as found. They never check how fast anything was.
"""

from __future__ import annotations

from collections import defaultdict, deque
from decimal import Decimal

import redis

from app.config import DEFAULT_UNIVERSE, Settings
from app.domain.risk import duplicate_signature
from app.redisio.embedded import EmbeddedRedis
from bench.risk import OrderFlow, RiskBenchOptions, format_table, run_risk_bench

REDIS_DB = 10  # this file's own


def test_risk_bench_measures_decision_and_floor_at_tiny_size(redis_server: EmbeddedRedis) -> None:
    url = redis_server.url.rsplit("/", 1)[0] + f"/{REDIS_DB}"
    settings = Settings().model_copy(update={"redis_url": url})
    options = RiskBenchOptions(
        rate=200, seconds=0.5, accounts=4, warmup_s=0.2, closed_seconds=0.2, concurrency=2
    )

    report = run_risk_bench(options, settings, progress=lambda _: None)

    modes = [(p.target, p.mode) for p in report.phases]
    assert modes == [
        ("floor", "open@200"),
        ("decision", "open@200"),
        ("floor", "closed c=2"),
        ("decision", "closed c=2"),
    ]
    for phase in report.phases:
        assert phase.errors == {}, phase
        assert phase.completed == phase.started > 0
        assert sum(phase.outcomes.values()) == phase.completed
        assert phase.p50_ms is not None
        assert phase.p95_ms is not None
        assert phase.p99_ms is not None
        assert phase.max_ms is not None
        assert 0 < phase.p50_ms <= phase.p95_ms <= phase.p99_ms <= phase.max_ms
    for phase in report.phases[:2]:
        assert phase.started == 100  # 200/s for 0.5 s: every scheduled call, none skipped
    decision = report.find("decision", closed=False)
    assert decision is not None
    assert decision.accepted > 0
    assert decision.outcomes.get("held", 0) == 0

    table = format_table(report)
    assert "decision/floor latency ratio (open loop): P50 " in table
    assert "P95 target <= 0.5 ms" in table
    assert set(report.verdicts()) == {"sustained", "p95", "p99"}

    client = redis.Redis.from_url(url)
    try:
        left = list(client.scan_iter(match="og:{brisk-*"))
        # Only duplicate-window markers, each gone within the window.
        assert [key for key in left if b":dup:" not in key] == []
        assert all(client.pttl(key) <= 500 for key in left)
        assert client.exists("bench:risk:floor") == 0
    finally:
        client.close()


def test_order_flow_never_repeats_a_signature_inside_the_duplicate_window() -> None:
    # 2000 orders of one account span seconds at any rate the bench reaches; the window 0.5 s.
    recent = 2000
    flow = OrderFlow(["a", "b", "c"], dict(DEFAULT_UNIVERSE), "t")
    seen: dict[str, deque[str]] = defaultdict(lambda: deque(maxlen=recent))
    for n in range(3 * 3 * recent):
        order = flow.order(n)
        signature = duplicate_signature(order.intent)
        assert signature not in seen[order.account], n
        seen[order.account].append(signature)
        reference = DEFAULT_UNIVERSE[order.intent.symbol]
        if order.intent.limit_price is not None:  # inside the bench's 1 % collar
            assert abs(order.intent.limit_price - reference) / reference <= Decimal("0.0051")
