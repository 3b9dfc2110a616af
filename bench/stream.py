"""``python -m bench stream``: execution reports from commit to subscriber, against a floor.

A private Redis, the gateway (``--workers``, the applier beside them) and the stream floor
(``bench.stream_floor``: HTTP in, one Redis stream, WebSocket out, nothing else). For each
run, target and rate: ``--subscribers`` WebSocket subscribers in a process of their own
(``bench.stream_clients``) follow the bench account, while market orders arrive at a
constant rate from the load process (each order is three reports: pending_new, new, fill;
the floor appends three entries). Latency is each ``new`` report's, from its time stamp
(the gateway's acknowledgement, just before the commit) to its arrival at a subscriber,
by the machine's one clock. The targets take turns (ABBA); the table gives the medians of
the runs' percentiles.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen

import numpy as np

from app.redisio.embedded import EmbeddedRedis
from bench.databases import DEFAULT_POSTGRES_URL, describe, order_log_url
from bench.openloop import LoadProcess, LoadSpec
from bench.orders import (
    HOST,
    ORDER_BODIES,
    ORDERS_PATH,
    _environment,
    _progress,
    _start_gateway,
    exit_code,
)
from bench.procs import ServerProcess, free_port, tree_cpu_seconds, wait_until_idle
from bench.report import verdict
from bench.stream_clients import launched
from bench.stream_floor import floor_command
from bench.wire import json_post_template

REPORTS_PER_ORDER = 3
# The target: each report at a subscriber within 5 ms (P95), 100 subscribers, 200/s.
P95_TARGET_MS = 5.0


@dataclass(frozen=True, slots=True)
class StreamOptions:
    subscribers: int = 100
    rates: tuple[float, ...] = (200.0,)  # reports a second
    duration_s: float = 10.0
    warmup_s: float = 2.0
    runs: int = 3
    workers: int = 2
    database: str = "sqlite"
    postgres_url: str = DEFAULT_POSTGRES_URL


@dataclass(frozen=True, slots=True)
class RunFigures:
    target: str
    rate: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    frames_per_s: float
    expected_frames_per_s: float
    closed: int  # subscribers the server closed
    server_us: float | None  # the server's CPU per report delivered to one subscriber
    clients_us: float | None  # the subscribers' process's, likewise
    # The raw samples, for plots: each 'new' report's latency (ms) and its arrival, in
    # seconds from the measured phase's start.
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    arrived_s: list[float] = field(default_factory=list, repr=False)


@dataclass(frozen=True, slots=True)
class _Target:
    name: str
    port: int
    key: str
    server: ServerProcess


def _subscribers(target: _Target, count: int) -> contextlib.AbstractContextManager[Popen[str]]:
    return launched(f"ws://{HOST}:{target.port}/v1/stream", count, key=target.key)


def _tell(clients: Popen[str], line: str) -> str:
    assert clients.stdin is not None
    assert clients.stdout is not None
    clients.stdin.write(line + "\n")
    clients.stdin.flush()
    return clients.stdout.readline()


def _spec(target: _Target, rate: float, duration_s: float, tag: str) -> LoadSpec:
    headers = {"Authorization": f"Bearer {target.key}"}
    template = json_post_template(
        HOST, target.port, ORDERS_PATH, ORDER_BODIES, "client_order_id", tag, headers
    )
    return LoadSpec(HOST, target.port, template, duration_s=duration_s, rate=rate)


def measure(
    target: _Target, load: LoadProcess, options: StreamOptions, rate: float, tag: str
) -> RunFigures:
    orders_per_s = rate / REPORTS_PER_ORDER
    with _subscribers(target, options.subscribers) as clients:
        load.run(_spec(target, orders_per_s, options.warmup_s, f"{tag}w"))
        _tell(clients, "reset")
        cpu_before = target.server.cpu_seconds(), tree_cpu_seconds(clients.pid)
        began = time.time()
        result = load.run(_spec(target, orders_per_s, options.duration_s, f"{tag}m"))
        wait_until_idle([target.server], timeout_s=10)
        cpu_after = target.server.cpu_seconds(), tree_cpu_seconds(clients.pid)
        figures = json.loads(_tell(clients, "stop"))
    latencies = np.array(figures["latencies_ms"])
    if latencies.size == 0:
        raise RuntimeError(f"{target.name}: no report reached a subscriber")
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    expected = result.ok * REPORTS_PER_ORDER * options.subscribers / options.duration_s
    closed = sum(n for name, n in figures.items() if name.startswith("closed"))
    server_us, clients_us = (
        None
        if a is None or b is None or not figures["reports"]
        else (b - a) / figures["reports"] * 1e6
        for a, b in zip(cpu_before, cpu_after, strict=True)
    )
    return RunFigures(
        target.name,
        rate,
        float(p50),
        float(p95),
        float(p99),
        figures["reports"] / options.duration_s,
        expected,
        closed,
        server_us,
        clients_us,
        figures["latencies_ms"],
        [at - began for at in figures["arrived_s"]],
    )


def run(options: StreamOptions, progress: Callable[[str], None] = _progress) -> list[RunFigures]:
    results: list[RunFigures] = []
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="og-bench-stream-")))
        progress("starting redis-server")
        redis = EmbeddedRedis(port=free_port()).start()
        stack.callback(redis.stop)
        progress(describe(options.database, options.postgres_url))
        database_url = stack.enter_context(
            order_log_url(options.database, options.postgres_url, tmp)
        )
        env = _environment(tmp, redis.url, database_url, {})
        gateway = stack.enter_context(_start_gateway(env, tmp, progress, options.workers))
        key = gateway.headers["Authorization"].removeprefix("Bearer ")
        port = free_port()
        floor = stack.enter_context(
            ServerProcess("floor", floor_command(port, options.workers), env, tmp / "floor.log")
        )
        floor.start(port, "/healthz")
        targets = (
            _Target("floor", port, "floor", floor),
            _Target("gateway", gateway.port, key, gateway.server),
        )
        load = stack.enter_context(LoadProcess())
        for turn in range(options.runs):
            for rate in options.rates:
                for target in targets if turn % 2 == 0 else targets[::-1]:
                    tag = f"s{turn}{int(rate)}{target.name[0]}-"
                    figures = measure(target, load, options, rate, tag)
                    progress(
                        f"{target.name}: {rate:g} reports/s x {options.subscribers} subscribers,"
                        f" run {turn + 1}: P95 {figures.p95_ms:.2f} ms"
                    )
                    results.append(figures)
    return results


def table(results: list[RunFigures], subscribers: int) -> str:
    lines = [
        f"{subscribers} subscribers; latency of each 'new' report, its time stamp to arrival",
        "target   reports/s  frames/s  runs  P50 ms  P95 ms  P99 ms  received  closed"
        "  server us  clients us",
        "-" * 102,
    ]
    keys = dict.fromkeys((r.rate, r.target) for r in results)
    for rate, target in sorted(keys):
        rows = [r for r in results if (r.rate, r.target) == (rate, target)]

        def med(values: list[float]) -> float:
            return statistics.median(values)

        received = med([r.frames_per_s / r.expected_frames_per_s for r in rows])
        lines.append(
            f"{target:<8} {rate:9g}  {med([r.expected_frames_per_s for r in rows]):8.0f}"
            f"  {len(rows):4d}  {med([r.p50_ms for r in rows]):6.2f}"
            f"  {med([r.p95_ms for r in rows]):6.2f}  {med([r.p99_ms for r in rows]):6.2f}"
            f"  {received:8.3f}  {sum(r.closed for r in rows):6d}"
            f"  {_cpu([r.server_us for r in rows]):>9}  {_cpu([r.clients_us for r in rows]):>10}"
        )
    gateway = [r.p95_ms for r in results if r.target == "gateway"]
    if gateway:
        met = statistics.median(gateway) <= P95_TARGET_MS
        lines.append(
            f"P95 target for the gateway <= {P95_TARGET_MS:g} ms (at 100 subscribers, 200 "
            f"reports/s): {verdict(met)}"
        )
    lines.append(
        "medians of the runs; frames/s: reports/s x subscribers; received: share of those"
        " frames that arrived;\nserver us, clients us: CPU per report delivered to one"
        " subscriber (the server's processes with the applier; the subscribers' process)"
    )
    return "\n".join(lines)


def _cpu(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{statistics.median(known):.1f}" if known else "-"


def command(args: argparse.Namespace) -> int:
    options = StreamOptions(
        subscribers=args.subscribers,
        rates=tuple(args.rates),
        duration_s=args.duration,
        warmup_s=args.warmup,
        runs=args.runs,
        workers=args.workers,
        database=args.database,
        postgres_url=args.postgres_url,
    )

    def body() -> None:
        print(table(run(options), options.subscribers), flush=True)

    return exit_code("stream", body)
