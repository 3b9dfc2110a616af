"""Monitoring against a real gateway: every metric the dashboard and the alert rules read is
on its /metrics, and a real Prometheus scraping it fires the order latency alert once the
paper exchange is slowed, and not before."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import DatabaseFactory, Gateway, launch_gateway
from tests.helpers.orders import market
from tests.helpers.prometheus import (
    RULES,
    PrivatePrometheus,
    PrometheusTools,
    dashboard_expressions,
    exported_name,
    fast_rules,
    metric_names,
    names_on_metrics_page,
    recorded_names,
    require_prometheus_tools,
    rule_expressions,
)

# The rules' time, 20 times faster: `for: 1m` becomes 3 s, a 1 minute window 4 s (a rate
# over scrapes a second apart needs a few samples).
SPEEDUP = 20
MIN_RANGE_S = 4
ALERT = "OrderLatencyOverSLA"
P95 = "histogram_quantile(0.95, sum by (le) (rate(ordergate_order_latency_seconds_bucket[4s])))"
# One-way: an order waits it twice at the paper exchange, ~300 ms against a 200 ms SLA.
SLOW_BROKER_MS = 150
SENDERS = 3  # orders in flight at once: some 10/s slowed, more before
FIRING_WITHIN_S = 60.0


@pytest.fixture
def tools() -> PrometheusTools:
    return require_prometheus_tools()


@pytest.fixture(scope="module")
def monitored(
    database_factory: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """One gateway for this module's tests: one worker, so that its /metrics lists every
    family, used or not yet (under several, only those with samples), and its own private
    redis-server."""
    gateway = launch_gateway(
        tmp_path_factory.mktemp("monitored"), database_factory.create("sqlite"), None, workers=1
    )
    yield gateway
    gateway.stop()


async def test_every_metric_the_dashboard_and_the_alerts_read_is_on_metrics(
    monitored: Gateway,
) -> None:
    async with monitored.client(monitored.new_key("monitoring")) as client:
        placed = await client.post("/v1/orders", json=market("AAPL"))
        assert placed.status_code == 201, placed.text
        page = (await client.get("/metrics")).text
    exported = names_on_metrics_page(page)

    read_by_rules = set().union(*(metric_names(e) for e in rule_expressions()))
    dashboard = dashboard_expressions()
    assert len(dashboard) >= 10, "the dashboard's panel queries were not found"
    read_by_dashboard = set().union(*(metric_names(e) for e in dashboard))
    # The dashboard may read recorded series: those the rule file records.
    recorded = {name for name in read_by_dashboard | read_by_rules if ":" in name}
    assert recorded <= recorded_names(), "recorded series nobody records"

    wanted = {
        exported_name(name)
        for name in read_by_rules | read_by_dashboard
        if ":" not in name and name != "up"  # up: Prometheus's own, per target
    }
    assert "ordergate_order_latency_seconds" in wanted  # the parse found the names
    missing = sorted(name for name in wanted if name not in exported)
    assert missing == [], f"read by the dashboard or the alerts, not on /metrics: {missing}"


@asynccontextmanager
async def sending_orders(client: httpx.AsyncClient) -> AsyncIterator[list[int]]:
    """Market orders, buy then sell (flat), from a few senders until the block ends; yields
    the statuses answered so far."""
    statuses: list[int] = []
    stop = asyncio.Event()

    async def sender() -> None:
        side = "buy"
        while not stop.is_set():
            answer = await client.post("/v1/orders", json=market("AAPL", side=side))
            statuses.append(answer.status_code)
            side = "sell" if side == "buy" else "buy"
            await asyncio.sleep(0.1)

    tasks = [asyncio.create_task(sender()) for _ in range(SENDERS)]
    try:
        yield statuses
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def test_a_slowed_broker_fires_the_order_latency_alert_in_a_real_prometheus(
    monitored: Gateway, tools: PrometheusTools, tmp_path: Path
) -> None:
    gateway = monitored
    rules = fast_rules(RULES.read_text(), speedup=SPEEDUP, min_range_s=MIN_RANGE_S)
    assert f"[{MIN_RANGE_S}s]" in rules
    assert f"for: {60 // SPEEDUP}s" in rules
    target = gateway.base_url.removeprefix("http://")
    # Prometheus first: it takes a few seconds to start scraping a target, meanwhile the key.
    with PrivatePrometheus(tools, tmp_path / "prometheus", target, rules) as prometheus:
        key = gateway.new_key("monitoring", "admin")  # trades and slows the paper exchange
        async with (
            gateway.client(key) as client,
            httpx.AsyncClient(timeout=5) as api,
            sending_orders(client) as statuses,
        ):
            # Before: Prometheus sees a P95 within the SLA for a whole window, and the
            # alert neither pending nor firing meanwhile.
            await fast_for(prometheus, api, seconds=MIN_RANGE_S)
            assert set(statuses) == {201}

            slowed = await client.put("/v1/sim/broker", json={"latency_ms": SLOW_BROKER_MS})
            assert slowed.status_code == 200, slowed.text
            try:
                firing = await firing_within(prometheus, api, FIRING_WITHIN_S)
            finally:
                await client.put("/v1/sim/broker", json={})  # its configured faults again
    assert firing["labels"]["severity"] == "critical"
    assert "over the 200 ms SLA" in firing["annotations"]["summary"]
    assert float(firing["value"]) > 0.2
    assert set(statuses) == {201}


async def fast_for(prometheus: PrivatePrometheus, api: httpx.AsyncClient, seconds: float) -> None:
    """The order P95 in Prometheus within the SLA, and the alert neither pending nor firing,
    for ``seconds`` from its first value."""
    deadline = time.monotonic() + 20 + seconds
    fast_since: float | None = None
    while fast_since is None or time.monotonic() - fast_since < seconds:
        assert time.monotonic() < deadline, f"no P95: up is {await prometheus.query(api, 'up')}"
        alerts = await prometheus.alerts(api)
        assert [a for a in alerts if a["labels"]["alertname"] == ALERT] == []
        p95 = await prometheus.query(api, P95)
        if p95 and p95[0]["value"][1] != "NaN":
            assert float(p95[0]["value"][1]) < 0.2, p95
            fast_since = fast_since or time.monotonic()
        await asyncio.sleep(0.5)


async def firing_within(
    prometheus: PrivatePrometheus, api: httpx.AsyncClient, seconds: float
) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        alerts = await prometheus.alerts(api)
        firing = [a for a in alerts if a["labels"]["alertname"] == ALERT and a["state"] == "firing"]
        if firing:
            [alert] = firing
            return alert
        assert time.monotonic() < deadline, (
            f"{ALERT} not firing after {seconds} s: alerts {alerts},"
            f" P95 {await prometheus.query(api, P95)}\n{prometheus.log()[-2000:]}"
        )
        await asyncio.sleep(0.5)
