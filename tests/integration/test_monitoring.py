"""Monitoring against a real gateway: every metric the dashboard and the alert rules read is
on its /metrics, and a real Prometheus scraping it fires the order latency alert once the
paper exchange is slowed, and not before."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.metrics import MetricWrapperBase

from app.services import metrics as gateway_metrics
from tests.conftest import DatabaseFactory, Gateway, launch_gateway, wait_for
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
FOR_S = 60 // SPEEDUP
ALERT = "OrderLatencyOverSLA"
P95 = (
    "histogram_quantile(0.95, sum by (le)"
    f" (rate(ordergate_order_latency_seconds_bucket[{MIN_RANGE_S}s])))"
)
# One-way: an order waits it twice at the paper exchange, ~300 ms against a 200 ms SLA.
SLOW_BROKER_MS = 150
SENDERS = 3  # orders in flight at once, each then 0.1 s apart: ~7 a second once slowed
FIRING_WITHIN_S = 60.0
# Its breaker half-opens soon after it opens: cheap to show moving.
BREAKER_ENV = {"ORDERGATE_BROKER_GUARD__BREAKER_OPEN_S": "0.5"}
BREAKER_FAILURES = 5  # the default threshold
# Families only the strategy loop writes (it needs the feed and the signals running): these
# are checked as declared by the gateway, not as seen on /metrics.
ONLY_WITH_THE_STRATEGY = {"ordergate_strategy_orders_total"}


@pytest.fixture(scope="module")
def monitored(
    database_factory: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """One gateway for this module's tests, with its own private redis-server."""
    gateway = launch_gateway(
        tmp_path_factory.mktemp("monitored"),
        database_factory.create("sqlite"),
        None,
        workers=1,
        extra_env=BREAKER_ENV,
    )
    yield gateway
    gateway.stop()


@pytest.fixture
def tools() -> PrometheusTools:
    return require_prometheus_tools()


def declared_families() -> set[str]:
    """The gateway's metric families as exposed (a counter with _total)."""
    names = set()
    for value in vars(gateway_metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                names.add(family.name + ("_total" if family.type == "counter" else ""))
    return names


async def use_every_labelled_family(client: httpx.AsyncClient) -> None:
    """Make the gateway write a series of each labelled family: under ``ordergate serve``
    (multiprocess mode) a family is on /metrics once it has one."""
    placed = await client.post("/v1/orders", json=market("AAPL"))
    assert placed.status_code == 201, placed.text
    denied = await client.post("/v1/orders", json=market("ZZZZ"))  # an error, by code
    assert denied.status_code == 422, denied.text
    # The breaker opens on a failed placement, refuses the next order, then closes again.
    failing = await client.put("/v1/sim/broker", json={"fail_next": BREAKER_FAILURES})
    assert failing.status_code == 200, failing.text
    for _ in range(BREAKER_FAILURES):
        failed = await client.post("/v1/orders", json=market("AAPL"))
        assert failed.status_code >= 500, failed.text
    refused = await client.post("/v1/orders", json=market("AAPL"))
    assert refused.json()["code"] == "broker.circuit_open", refused.text

    async def closed_again() -> bool:  # half open, the trial orders close it
        await client.post("/v1/orders", json=market("AAPL"))
        [breaker] = (await client.get("/v1/breakers")).json()
        return bool(breaker["state"] == "closed")

    await wait_for(closed_again, within=10, interval=0.2)
    # A tick the processor dead-letters (a price of 0).
    bad_tick = {"symbol": "AAPL", "price": "0", "size": "1", "time": datetime.now(UTC).isoformat()}
    posted = await client.post("/v1/marketdata/ticks", json={"ticks": [bad_tick]})
    assert posted.status_code == 202, posted.text


async def test_every_metric_the_dashboard_and_the_alerts_read_is_on_metrics(
    monitored: Gateway,
) -> None:
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

    async with monitored.client(monitored.new_key("monitoring", "admin")) as client:
        await use_every_labelled_family(client)
        missing: list[str] = []

        async def all_exported() -> bool:
            nonlocal missing
            exported = names_on_metrics_page((await client.get("/metrics")).text)
            missing = sorted(wanted - exported - ONLY_WITH_THE_STRATEGY)
            return not missing

        try:  # the worker's dead letter arrives a moment later
            await wait_for(all_exported, within=10, interval=0.2)
        except AssertionError:
            pytest.fail(f"read by the dashboard or the alerts, not on /metrics: {missing}")
    assert declared_families() >= ONLY_WITH_THE_STRATEGY


@asynccontextmanager
async def sending_orders(client: httpx.AsyncClient) -> AsyncIterator[list[int]]:
    """Market orders, buy then sell (flat), from a few senders until the block ends; yields
    the statuses answered so far (on a loaded machine a few may be refused, e.g. 503 when
    Redis or the database answer later than their budgets allow)."""
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
    assert f"for: {FOR_S}s" in rules
    target = gateway.base_url.removeprefix("http://")
    # Prometheus first: it takes a few seconds to start scraping a target, meanwhile the key.
    with PrivatePrometheus(tools, tmp_path / "prometheus", target, rules) as prometheus:
        key = gateway.new_key("monitoring", "admin")  # trades and slows the paper exchange
        async with (
            gateway.client(key) as client,
            httpx.AsyncClient(timeout=5) as api,
            sending_orders(client) as statuses,
        ):
            # Before: Prometheus sees a P95 within the SLA, and the alert does not fire,
            # for longer than a rule always true would take to fire (window, for, a tick).
            await fast_for(prometheus, api, seconds=MIN_RANGE_S + FOR_S + 1)
            assert statuses.count(201) > 0.9 * len(statuses), statuses

            slowed = await client.put("/v1/sim/broker", json={"latency_ms": SLOW_BROKER_MS})
            assert slowed.status_code == 200, slowed.text
            try:
                firing = await firing_within(prometheus, api, FIRING_WITHIN_S)
            finally:
                await client.put("/v1/sim/broker", json={})  # its configured faults again
    assert firing["labels"]["severity"] == "critical"
    assert "over the 200 ms SLA" in firing["annotations"]["summary"]
    assert float(firing["value"]) > 0.2
    assert statuses.count(201) > 0.9 * len(statuses), statuses


async def fast_for(prometheus: PrivatePrometheus, api: httpx.AsyncClient, seconds: float) -> None:
    """For ``seconds`` from the order P95's first value in Prometheus: the alert never
    firing, and the P95 typically within the SLA (a loaded machine may spike it a moment)."""
    deadline = time.monotonic() + 20 + seconds
    first: float | None = None
    p95s: list[float] = []
    while first is None or time.monotonic() - first < seconds:
        assert time.monotonic() < deadline, f"no P95: up is {await prometheus.query(api, 'up')}"
        alerts = await prometheus.alerts(api)
        assert [
            a for a in alerts if a["labels"]["alertname"] == ALERT and a["state"] == "firing"
        ] == []
        p95 = await prometheus.query(api, P95)
        if p95 and p95[0]["value"][1] != "NaN":
            p95s.append(float(p95[0]["value"][1]))
            first = first or time.monotonic()
        await asyncio.sleep(0.5)
    assert statistics.median(p95s) < 0.2, p95s


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
