"""The order benchmark's machinery at tiny sizes, against real servers and a real Redis.

These keep ``python -m bench orders`` working; they check counts and the shape of the numbers
(every scheduled request sent, percentiles ordered), never how fast anything was: CI machines
are too noisy for that, and the benchmark's job is to print numbers, not to gate on them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest

from app.redisio.embedded import EmbeddedRedis
from bench import concurrencies, positive_int
from bench.floor import floor_command
from bench.openloop import LoadProcess, LoadSpec, PhaseResult, merge_phases
from bench.orders import ORDER_BODIES
from bench.procs import ServerProcess, free_port, tree_cpu_seconds
from bench.report import BenchReport, Row, format_table
from bench.wire import ClientConnection, RequestTemplate, json_post_template

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
BODIES = list(ORDER_BODIES)  # what the benchmark sends


def _template(port: int, prefix: str, bodies: list[dict[str, Any]] = BODIES) -> RequestTemplate:
    return json_post_template(
        HOST,
        port,
        "/v1/orders",
        bodies,
        "client_order_id",
        prefix,
        {"Authorization": "Bearer test"},
    )


def _assert_well_formed(result: PhaseResult) -> None:
    assert result.ok > 0
    assert result.sent >= result.ok
    assert result.achieved_per_s > 0
    assert result.p50_ms is not None
    assert result.p95_ms is not None
    assert result.p99_ms is not None
    assert result.max_ms is not None
    assert 0 <= result.p50_ms <= result.p95_ms <= result.p99_ms <= result.max_ms


@pytest.fixture(scope="module")
def floor_port(
    redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    port = free_port()
    argv = floor_command(HOST, port, redis_server.url)
    log = tmp_path_factory.mktemp("floor") / "floor.log"
    with ServerProcess("floor", argv, os.environ, log) as server:
        server.start(port, "/healthz")
        yield port


@pytest.fixture(scope="module")
def load() -> Iterator[LoadProcess]:
    with LoadProcess() as process:
        yield process


def test_open_loop_sends_every_scheduled_request(floor_port: int, load: LoadProcess) -> None:
    spec = LoadSpec(
        HOST,
        floor_port,
        _template(floor_port, "smoke-open-"),
        duration_s=1.0,
        rate=50,
        connections=2,
    )
    result = load.run(spec)
    assert result.mode == "open@50"
    assert result.sent == 50
    assert result.ok == 50
    assert result.errors == {}
    _assert_well_formed(result)


def test_closed_loop_keeps_every_connection_busy(floor_port: int, load: LoadProcess) -> None:
    spec = LoadSpec(
        HOST, floor_port, _template(floor_port, "smoke-closed-"), duration_s=0.5, connections=4
    )
    result = load.run(spec)
    assert result.mode == "closed c=4"
    assert result.offered_per_s is None
    assert result.peak_connections == 4
    assert result.errors == {}
    _assert_well_formed(result)


def test_non_2xx_replies_are_errors_bucketed_by_status(floor_port: int, load: LoadProcess) -> None:
    # The floor validates like the gateway: a negative quantity is a 422, with a body saying so.
    bad = [{**BODIES[0], "qty": "-1"}]
    spec = LoadSpec(
        HOST,
        floor_port,
        _template(floor_port, "smoke-bad-", bad),
        duration_s=0.5,
        rate=20,
        connections=1,
    )
    result = load.run(spec)
    assert result.ok == 0
    assert result.errors == {"422": 10}
    assert "qty" in result.error_samples["422"]
    assert result.p50_ms is None  # latencies are of successful replies only


def test_unreachable_server_ends_the_phase_with_connect_errors(load: LoadProcess) -> None:
    port = free_port()  # nothing listens here
    spec = LoadSpec(
        HOST, port, _template(port, "smoke-dead-"), duration_s=0.5, rate=20, drain_s=5.0
    )
    result = load.run(spec)
    assert result.ok == 0
    assert result.errors == {"connect": 10}


def test_each_request_carries_its_own_id_and_a_correct_content_length() -> None:
    template = _template(8000, "bench-abc-01-")
    seen = []
    for n in range(4):
        head, body = template.build(n).split(b"\r\n\r\n", 1)
        assert f"content-length: {len(body)}".encode() in head.lower()
        payload = json.loads(body)
        assert payload["client_order_id"] == f"bench-abc-01-{n:09d}"
        seen.append(payload["side"])
    assert seen == ["buy", "sell", "buy", "sell"]


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True


def test_replies_split_at_any_byte_are_parsed_whole() -> None:
    replies = (
        b'HTTP/1.1 201 Created\r\ncontent-length: 11\r\n\r\n{"id":"1"}\n'
        b"HTTP/1.1 429 Too Many Requests\r\ntransfer-encoding: chunked\r\n\r\n"
        b'5\r\n{"a":\r\n2\r\n1}\r\n0\r\n\r\n'
    )
    got: list[tuple[int, float, bytes]] = []

    def on_response(
        _c: ClientConnection, status: int, intended: float, _d: float, body: bytes
    ) -> None:
        got.append((status, intended, body))
        if len(got) == 1:
            conn.send(b"second", 2.0)

    conn = ClientConnection(on_response, lambda _c, _i: None)
    conn.connection_made(cast(asyncio.Transport, _Transport()))
    conn.send(b"first", 1.0)
    for i in range(len(replies)):
        conn.data_received(replies[i : i + 1])
    assert got == [(201, 1.0, b""), (429, 2.0, b'{"a":1}')]
    assert conn.idle


def test_report_prints_ratio_and_verdicts() -> None:
    def phase(mode: str, rate: float | None, achieved: float) -> PhaseResult:
        return PhaseResult(
            mode=mode, offered_per_s=rate, duration_s=1.0, sent=int(achieved),
            ok=int(achieved), errors={}, error_samples={}, achieved_per_s=achieved,
            p50_ms=1.0, p95_ms=2.0, p99_ms=3.0, max_ms=4.0, send_lag_p50_ms=0.1,
            send_lag_p99_ms=0.2, peak_connections=2, client_cpu_share=0.1, window_s=1.0,
        )  # fmt: skip

    report = BenchReport(
        settings={"rate": 500.0},
        rows=[
            Row("floor", phase("open@500", 500, 500)),
            Row("gateway", phase("open@500", 500, 500)),
            Row("floor", phase("closed c=32", None, 2000)),
            Row("gateway", phase("closed c=32", None, 1300)),
        ],
    )
    table = format_table(report)
    assert "gateway/floor max throughput ratio: 0.65" in table
    assert report.verdicts() == {"sustained": True, "p95": True, "p99": True, "ratio": True}


def test_maximum_throughput_is_each_targets_best_closed_loop() -> None:
    def closed(connections: int, achieved: float) -> PhaseResult:
        return PhaseResult(
            mode=f"closed c={connections}", offered_per_s=None, duration_s=1.0,
            sent=int(achieved), ok=int(achieved), errors={}, error_samples={},
            achieved_per_s=achieved, p50_ms=1.0, p95_ms=2.0, p99_ms=3.0, max_ms=4.0,
            send_lag_p50_ms=0.1, send_lag_p99_ms=0.2, peak_connections=connections,
            client_cpu_share=0.1, window_s=1.0,
        )  # fmt: skip

    report = BenchReport(
        settings={"rate": 500.0},
        rows=[
            Row("floor", closed(32, 2000)),
            Row("gateway", closed(32, 800)),
            Row("floor", closed(128, 1900)),
            Row("gateway", closed(128, 1000)),
        ],
    )
    assert report.ratio == 0.5  # 1000 (gateway at c=128) / 2000 (floor at c=32)
    table = format_table(report)
    assert "floor 2000.0/s (closed c=32), gateway 1000.0/s (closed c=128)" in table


def test_slices_of_a_closed_loop_merge_into_one_phase() -> None:
    def slice_(ok: int, window_s: float, latencies_ms: list[float]) -> PhaseResult:
        return PhaseResult(
            mode="closed c=4", offered_per_s=None, duration_s=1.0, sent=ok + 1, ok=ok,
            errors={"503": 1}, error_samples={"503": f"busy {ok}"},
            achieved_per_s=ok / window_s, p50_ms=None, p95_ms=None, p99_ms=None, max_ms=None,
            send_lag_p50_ms=None, send_lag_p99_ms=None, peak_connections=4,
            client_cpu_share=0.5, window_s=window_s,
            latencies_s=[ms / 1000 for ms in latencies_ms], send_lags_s=[0.0] * ok,
        )  # fmt: skip

    # The second slice's last answers came 0.5 s after its end: its window is 1.5 s.
    merged = merge_phases([slice_(300, 1.0, [1.0] * 300), slice_(100, 1.5, [9.0] * 100)])
    assert (merged.ok, merged.sent, merged.duration_s, merged.window_s) == (400, 402, 2.0, 2.5)
    assert merged.achieved_per_s == 160.0  # 400 answers over the two windows' 2.5 s
    assert merged.errors == {"503": 2}
    assert merged.error_samples == {"503": "busy 300"}  # the first seen
    assert merged.p50_ms == pytest.approx(1.0)
    assert merged.max_ms == pytest.approx(9.0)
    assert merged.p95_ms == pytest.approx(9.0)  # a quarter of all answers took 9 ms
    with pytest.raises(ValueError, match="different modes"):
        merge_phases([slice_(1, 1.0, [1.0]), replace(slice_(1, 1.0, [1.0]), mode="closed c=8")])


@pytest.mark.parametrize(
    ("text", "parsed"), [("32", (32,)), ("32,128", (32, 128)), ("x", None), ("0,4", None)]
)
def test_closed_loop_concurrencies_are_a_positive_list(
    text: str, parsed: tuple[int, ...] | None
) -> None:
    if parsed is None:
        with pytest.raises(argparse.ArgumentTypeError):
            concurrencies(text)
    else:
        assert concurrencies(text) == parsed


@pytest.mark.parametrize(("text", "parsed"), [("4", 4), ("1", 1), ("0", None), ("x", None)])
def test_closed_loop_rounds_are_a_positive_integer(text: str, parsed: int | None) -> None:
    if parsed is None:
        with pytest.raises(argparse.ArgumentTypeError):
            positive_int(text)
    else:
        assert positive_int(text) == parsed


def test_a_servers_cpu_time_includes_its_child_processes() -> None:
    # The gateway's applier is a child process: its CPU is part of what an order costs.
    spin_in_child = (
        "import subprocess, sys; subprocess.run([sys.executable, '-c', 'while True: pass'])"
    )
    parent = subprocess.Popen([sys.executable, "-c", spin_in_child], start_new_session=True)
    try:
        # Until the child has spun well past what its parent used: the tree counts it.
        deadline = time.monotonic() + 20
        while True:
            own = _own_cpu_seconds(parent.pid)
            tree = tree_cpu_seconds(parent.pid)
            assert tree is not None
            if tree - own > 0.5:
                break
            assert time.monotonic() < deadline, (own, tree)
            time.sleep(0.1)
        assert own < 0.3  # the parent only waits
    finally:
        os.killpg(parent.pid, signal.SIGKILL)  # the parent and its spinning child
        parent.wait()


def _own_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_orders_bench_runs_end_to_end_at_tiny_size(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERGATE_")}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "orders",
            "--rate",
            "50",
            "--duration",
            "1",
            "--max-duration",
            "0.5",
            "--connections",
            "2,4",
            "--rounds",
            "2",
            "--warmup",
            "0.5",
            "--json",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "gateway/floor max throughput ratio" in done.stdout
    data: dict[str, Any] = json.loads(out.read_text())
    phases = [(p["target"], p["mode"]) for p in data["phases"]]
    assert phases == [
        ("floor", "open@50"),
        ("gateway", "open@50"),
        ("floor", "closed c=2"),
        ("gateway", "closed c=2"),
        ("floor", "closed c=4"),
        ("gateway", "closed c=4"),
    ]
    for p in data["phases"]:
        assert p["ok"] > 0, p
        assert p["p50_ms"] <= p["p95_ms"] <= p["p99_ms"] <= p["max_ms"]
        assert p["server_cpu_us_per_request"] > 0, p
        assert p["redis_cpu_us_per_request"] >= 0, p
        assert p["window_s"] >= 0.5, p
        assert not {"latencies_s", "send_lags_s"} & set(p), "raw samples kept out of the JSON"
    assert data["max_throughput_ratio"] > 0
    assert set(data["targets"]["met"]) == {"sustained", "p95", "p99", "ratio"}
