"""What a desk watches, from a real ``ordergate serve`` (two workers, the applier and the
worker beside them, its own redis-server): ``/metrics`` adding up every process, the order
path's stages and SLA, the rolling summary and ``ordergate status``, the JSON logs, and the
dependencies going away and coming back."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.services.metrics_reader import collect, forget_dead_processes
from tests.conftest import REPO, DatabaseFactory, Gateway, launch_gateway, wait_for
from tests.helpers.orders import market
from tests.helpers.processes import children, command_line

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]

STAGES = ("auth", "risk", "breaker", "pacing", "persist", "broker", "publish")


@pytest.fixture(scope="module")
def obs_gateway(
    database_factory: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("obs")
    gateway = launch_gateway(
        tmp,
        database_factory.create("sqlite"),
        None,  # its own redis-server: a test here stops it
        workers=2,
        extra_env={"ORDERGATE_LOG_LEVEL": "debug", "ORDERGATE_METRICS__SUMMARY_STEP_S": "1"},
    )
    gateway.keys = {
        "admin": gateway.new_key("ops", "admin"),
        "trader": gateway.new_key("obs-trader"),
    }
    limits = httpx.put(
        f"{gateway.base_url}/v1/risk/limits/obs-trader",
        json={"max_order_qty": "1000"},
        headers={"Authorization": f"Bearer {gateway.keys['admin']}"},
        timeout=10,
    )
    assert limits.status_code == 200, limits.text
    yield gateway
    gateway.stop()


async def scrape(gateway: Gateway) -> Series:
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=10) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(series: Series, name: str, **labels: str) -> float:
    return series.get((name, frozenset(labels.items())), 0.0)


async def summary(gateway: Gateway, key: str) -> httpx.Response:
    async with gateway.client(key) as client:
        return await client.get("/v1/metrics/summary")


async def place(gateway: Gateway, count: int, **order: Any) -> list[httpx.Response]:
    """``count`` orders at once, over as many connections as the pool opens."""
    async with gateway.client(gateway.keys["trader"]) as client:
        return await asyncio.gather(
            *(client.post("/v1/orders", json=market(**order)) for _ in range(count))
        )


async def test_metrics_add_up_every_worker_and_the_applier(obs_gateway: Gateway) -> None:
    before = await scrape(obs_gateway)
    answers = await place(obs_gateway, 40)
    assert [a.status_code for a in answers] == [201] * 40

    async def reports_published() -> bool:
        after = await scrape(obs_gateway)
        # A market order: new, then filled; published by the applier's process.
        published = value(after, "ordergate_execution_reports_total")
        return published - value(before, "ordergate_execution_reports_total") >= 80

    await wait_for(reports_published, within=10)
    # Either worker answers a scrape, and each answer is the whole gateway's.
    for _ in range(4):
        after = await scrape(obs_gateway)

        def grew(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)  # noqa: B023

        assert grew("ordergate_order_latency_seconds_count") == 40
        assert grew("ordergate_order_sla_total", result="within") == 40
        assert grew("ordergate_orders_total", outcome="accepted") == 40
        for stage in ("auth", "risk", "breaker", "pacing", "persist", "broker"):
            assert grew("ordergate_order_stage_seconds_count", stage=stage) == 40, stage
        assert grew("ordergate_order_stage_seconds_count", stage="publish") >= 80
        assert grew("http_requests_total", handler="/v1/orders", method="POST", status="2xx") == 40
        assert value(after, "ordergate_orders_in_flight") == 0
    for name, labels in [
        ("ordergate_dependency_up", {"dependency": "redis"}),
        ("ordergate_dependency_up", {"dependency": "database"}),
        ("ordergate_order_sla_compliance_ratio", {}),
    ]:
        assert value(after, name, **labels) == 1.0, name
    assert value(after, "ordergate_order_sla_target_seconds") == 0.2
    assert value(after, "ordergate_breaker_state", broker="simulated") == 0
    assert (
        "ordergate_pacing_tokens",
        frozenset({("broker", "simulated"), ("endpoint", "order_placement")}),
    ) in after
    assert value(after, "ordergate_marketdata_lag_seconds") == 0


async def test_orders_over_the_sla_and_refused_ones_are_counted_as_such(
    obs_gateway: Gateway,
) -> None:
    admin = obs_gateway.keys["admin"]
    before = await scrape(obs_gateway)
    async with obs_gateway.client(admin) as client:
        slowed = await client.put("/v1/sim/broker", json={"latency_ms": 150})
        assert slowed.status_code == 200, slowed.text
        try:
            await asyncio.sleep(0.4)  # every worker sees the faults within 0.2 s
            # One at a time: concurrent orders in a worker may be placed before the one
            # that re-reads the faults has them.
            slow = [r for _ in range(3) for r in await place(obs_gateway, 1)]
        finally:
            restored = await client.put("/v1/sim/broker", json={})
            assert restored.status_code == 200, restored.text
    assert [a.status_code for a in slow] == [201] * 3
    too_big = await place(obs_gateway, 2, qty="5000")  # over the account's max_order_qty
    assert {a.json()["code"] for a in too_big} == {"risk.max_order_qty"}
    after = await scrape(obs_gateway)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # A round trip of 2 x 150 ms is over the 200 ms target; the denials are quick.
    assert grew("ordergate_order_sla_total", result="over") == 3
    assert grew("ordergate_order_sla_total", result="within") == 2
    assert grew("ordergate_orders_total", outcome="denied") == 2
    assert grew("ordergate_errors_total", code="risk.max_order_qty") == 2
    broker_time = grew("ordergate_order_stage_seconds_sum", stage="broker")
    assert broker_time >= 3 * 0.3 * 0.9  # the slow broker is charged to its stage
    assert grew("ordergate_order_stage_seconds_count", stage="broker") == 3
    assert value(after, "ordergate_order_sla_compliance_ratio") < 1.0


async def test_the_summary_is_for_admins_and_status_prints_it(obs_gateway: Gateway) -> None:
    await place(obs_gateway, 10)
    for key, status in [(obs_gateway.keys["trader"], 403), ("og_not-a-key", 401)]:
        refused = await summary(obs_gateway, key)
        assert refused.status_code == status
        assert refused.headers["content-type"] == "application/problem+json"

    answered = await summary(obs_gateway, obs_gateway.keys["admin"])
    assert answered.status_code == 200, answered.text
    body = answered.json()
    assert body["window_s"] == 300
    assert 0 < body["covered_s"] <= 300
    assert body["sla_target_ms"] == 200
    assert body["end_to_end"]["count"] >= 10
    assert body["within_sla"] + body["over_sla"] == body["end_to_end"]["count"]
    assert body["outcomes"]["accepted"] >= 10
    assert body["orders_per_s"] > 0
    assert body["reports_per_s"] > 0
    assert set(body["stages"]) == set(STAGES)
    for latency in [body["end_to_end"], *body["stages"].values()]:
        assert latency["count"] > 0
        assert 0 <= latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"]
    # The sum of the stages never passes the whole (publish happens after the answer).
    inner = sum(body["stages"][s]["p50_ms"] for s in STAGES if s != "publish")
    assert inner <= body["end_to_end"]["p99_ms"] * 2

    status = run_status(obs_gateway, "--key", obs_gateway.keys["admin"])
    assert status.returncode == 0, status.stderr
    table = status.stdout
    for row in (*STAGES, "end to end", "SLA", "throughput"):
        assert row in table, table
    as_json = run_status(obs_gateway, "--key", obs_gateway.keys["admin"], "--json")
    assert json.loads(as_json.stdout)["sla_target_ms"] == 200

    refused_cli = run_status(obs_gateway, "--key", obs_gateway.keys["trader"])
    assert refused_cli.returncode == 1
    assert "403" in refused_cli.stderr
    assert obs_gateway.keys["trader"] not in refused_cli.stderr
    no_key = run_status(obs_gateway)
    assert no_key.returncode == 2
    assert "admin key" in no_key.stderr


def run_status(gateway: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in gateway.env.items() if k != "ORDERGATE_ADMIN_KEY"}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "status", "--url", gateway.base_url, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=REPO,
    )


async def test_every_log_line_is_json_and_tells_an_orders_story_without_secrets(
    obs_gateway: Gateway,
) -> None:
    trader = obs_gateway.keys["trader"]
    async with obs_gateway.client(trader) as client:
        placed = await client.post("/v1/orders", json=market(), headers={"X-Request-ID": "story-1"})
        assert placed.status_code == 201, placed.text
        assert placed.headers["x-request-id"] == "story-1"
        denied = await client.post("/v1/orders", json=market(qty="5000"))
        assert denied.status_code == 422
        made_up = denied.headers["x-request-id"]  # none sent: one is made
        assert len(made_up) == 16
        listed = await client.get("/v1/orders", headers={"X-Request-ID": "bad id with spaces"})
        assert listed.headers["x-request-id"] != "bad id with spaces"
    async with obs_gateway.client("og_" + "x" * 43) as stranger:
        assert (await stranger.get("/v1/orders")).status_code == 401
    order = placed.json()

    def lines() -> list[dict[str, Any]]:
        assert obs_gateway.log_path is not None
        text = obs_gateway.log_path.read_text()
        return [json.loads(line) for line in text.splitlines()]  # every line is JSON

    async def applied() -> bool:
        return any(
            line.get("client_order_id") == order["client_order_id"]
            and line["msg"].startswith("applying report")
            for line in lines()
        )

    await wait_for(applied, within=10)
    story = [line for line in lines() if line.get("order_id") == order["id"]]
    assert story, "no line names the order"
    for line in story:
        assert line["request_id"] == "story-1", line
        assert line["account"] == "obs-trader", line
        assert line["client_order_id"] == order["client_order_id"], line
    assert any(line["msg"].startswith("order accepted") for line in story)
    denial = [line for line in lines() if line.get("request_id") == made_up]
    assert any(line["msg"] == "order denied: risk.max_order_qty" for line in denial), denial
    text = obs_gateway.log_path.read_text() if obs_gateway.log_path else ""
    for key in obs_gateway.keys.values():
        assert key not in text
    assert "x" * 43 not in text


async def test_ticks_and_signal_cycles_are_counted(obs_gateway: Gateway) -> None:
    at = datetime.now(UTC) - timedelta(seconds=5)
    ticks = [
        {"symbol": symbol, "price": "100.00", "size": "10", "time": at.isoformat()}
        for symbol in ("AAPL", "MSFT", "NVDA")
    ]
    before = await scrape(obs_gateway)
    async with obs_gateway.client(obs_gateway.keys["admin"]) as admin:
        accepted = await admin.post("/v1/marketdata/ticks", json={"ticks": ticks})
    assert accepted.status_code == 202, accepted.text

    async def counted() -> bool:
        after = await scrape(obs_gateway)
        return value(after, "ordergate_marketdata_ticks_total") - value(
            before, "ordergate_marketdata_ticks_total"
        ) == 3 and value(after, "ordergate_signal_cycle_seconds_count") > value(
            before, "ordergate_signal_cycle_seconds_count"
        )

    await wait_for(counted, within=10)


async def test_a_stopped_redis_reads_as_down_and_back_up(obs_gateway: Gateway) -> None:
    assert obs_gateway.process is not None
    redis_pid = next(
        pid for pid in children(obs_gateway.process.pid) if "redis" in command_line(pid)
    )
    os.kill(redis_pid, signal.SIGSTOP)
    try:
        down = await scrape(obs_gateway)  # answered, within the checks' timeouts
        assert value(down, "ordergate_dependency_up", dependency="redis") == 0
        assert value(down, "ordergate_dependency_up", dependency="database") == 1
        # What only Redis knows is left out rather than guessed.
        assert not any(name == "ordergate_breaker_state" for name, _ in down)
    finally:
        os.kill(redis_pid, signal.SIGCONT)

    async def back() -> bool:
        up = await scrape(obs_gateway)
        return value(up, "ordergate_dependency_up", dependency="redis") == 1

    await wait_for(back, within=10)


def test_a_dead_processes_live_gauges_are_dropped_and_its_counts_kept(tmp_path: Path) -> None:
    """A worker killed mid-request leaves its in-flight gauge behind in the multiprocess
    directory; the next snapshot drops it, while what it counted stays counted."""
    script = (
        "from app.services.metrics import ORDERS_IN_FLIGHT, EXECUTION_REPORTS\n"
        "ORDERS_IN_FLIGHT.inc(3); EXECUTION_REPORTS.inc(5)\n"
        "import os; os._exit(0)  # no clean-up, as kill -9\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)

    def sample(name: str) -> float | None:
        for family in collect(tmp_path):
            for s in family.samples:
                if s.name == name:
                    return float(s.value)
        return None

    assert sample("ordergate_orders_in_flight") == 3
    dead = forget_dead_processes(tmp_path)
    assert len(dead) == 1
    assert sample("ordergate_orders_in_flight") is None
    assert sample("ordergate_execution_reports_total") == 5
    assert forget_dead_processes(tmp_path) == []  # nothing more to drop; this process lives
