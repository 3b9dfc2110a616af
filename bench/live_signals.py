"""``python -m bench live-signals``: one new timestamp for N symbols, from the ticks reaching
Redis to the signal cycle published, against a floor, in one run.

A private Redis; ``ordergate worker`` (the tick processor and the signal worker, real
processes, the default signal set and ``residual`` orthogonalization) over a universe of
``--symbols`` symbols; and the floor (``bench.signal_floor``: the same two blocking-read /
write hops, no work). Each timestamp is a batch of one tick per symbol, a minute of the
feed's clock after the last (so every symbol completes a bar each time: the most work a
timestamp can bring), appended to the raw stream as one entry stamped with the time it was
sent, as ``POST /v1/marketdata/ticks`` appends and stamps a batch. This process reads both
signal streams and takes each cycle's latency from that stamp to its arrival here (one
clock). Timestamps go out at a constant rate, the pipeline's and the floor's half a period
apart. First, ``--history`` timestamps fill the signals' windows (off the clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import uvloop

from app.redisio.embedded import EmbeddedRedis
from app.redisio.multiplexed import MultiplexedRedis, pairs
from app.storage.redis.keys import MarketDataKeys
from bench.latency import Percentiles, percentiles
from bench.procs import free_port
from bench.signal_floor import RAW as FLOOR_RAW
from bench.signal_floor import SIGNALS as FLOOR_SIGNALS

P95_TARGET_MS = 20.0
T0_US = 1_772_461_800_000_000  # the feed's clock starts at a minute's start
MINUTE_US = 60_000_000


@dataclass(frozen=True, slots=True)
class LiveSignalOptions:
    symbols: int = 500
    rate: float = 4.0  # timestamps a second, each target
    duration_s: float = 30.0
    history: int = 62  # timestamps before the clock starts: the signals' full windows
    seed: int = 1


@dataclass(frozen=True, slots=True)
class LiveSignalReport:
    options: LiveSignalOptions
    pipeline: Percentiles
    sent: int  # timestamps sent to each target
    floor: Percentiles
    # Each cycle's (seconds since the measured phase began, latency ms), per target, for plots.
    samples: dict[str, list[tuple[float, float]]] = field(default_factory=dict, repr=False)

    @property
    def passed(self) -> bool:
        return self.pipeline.p95_ms <= P95_TARGET_MS and self.pipeline.count == self.sent


def run_live_signals(
    options: LiveSignalOptions, progress: Callable[[str], None] = print
) -> LiveSignalReport:
    symbols = [f"S{n:04d}" for n in range(options.symbols)]
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(EmbeddedRedis(port=free_port()))
        data_dir = tempfile.mkdtemp(prefix="og-live-signals-")
        progress(f"live-signals: the processes' logs are in {data_dir}")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ORDERGATE_")},
            "REDIS_URL": redis.url,
            "ORDERGATE_DATA_DIR": data_dir,
            "ORDERGATE_UNIVERSE": json.dumps({s: "100" for s in symbols}),
            "ORDERGATE_MARKETDATA__BARS_KEPT": "100",
        }
        for name, argv in (
            ("worker", [sys.executable, "-m", "app.cli", "worker"]),
            ("floor", [sys.executable, "-m", "bench.signal_floor", redis.url]),
        ):
            log = stack.enter_context((Path(data_dir) / f"{name}.log").open("wb"))
            process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
            stack.callback(_stop, process)
        return uvloop.run(_measure(options, symbols, redis.url, progress))


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


async def _measure(
    options: LiveSignalOptions, symbols: list[str], url: str, progress: Callable[[str], None]
) -> LiveSignalReport:
    redis = MultiplexedRedis(url, reply_timeout_s=10.0)
    rng = np.random.default_rng(options.seed)
    log_prices = np.full(len(symbols), np.log(100.0))
    minute = 0

    def timestamp() -> list[tuple[str, str, str, int]]:
        nonlocal minute, log_prices
        minute += 1
        log_prices = log_prices + rng.normal(0, 0.002, len(symbols))
        prices = np.round(np.exp(log_prices), 2)
        sizes = rng.integers(1, 1000, len(symbols))
        ts = T0_US + minute * MINUTE_US
        return [(s, f"{p:.2f}", str(q), ts) for s, p, q in zip(symbols, prices, sizes, strict=True)]

    async def send(stream: str, ticks: list[tuple[str, str, str, int]]) -> int:
        """One batch, as the gateway appends what a POST brings."""
        received_ns = time.time_ns()
        await redis.execute(
            "XADD", stream, "MAXLEN", "~", 100_000, "*",
            "ticks", orjson.dumps(ticks), "received_ns", received_ns,
        )  # fmt: skip
        return received_ns

    progress(f"live-signals: {options.history} timestamps of history for {len(symbols)} symbols")
    await _until_worker_reads(redis)
    for _ in range(options.history):
        await send(MarketDataKeys.raw, timestamp())
    await _until_cycle(redis, T0_US + minute * MINUTE_US, timeout_s=120)
    await send(FLOOR_RAW, timestamp()[:1])  # the floor's relays are reading
    await asyncio.sleep(0.5)

    results: dict[str, list[tuple[float, float]]] = {"pipeline": [], "floor": []}
    sent = {"pipeline": 0, "floor": 0}
    stop = asyncio.Event()
    readers = [
        asyncio.create_task(_read(url, MarketDataKeys.signals, results["pipeline"], stop)),
        asyncio.create_task(_read(url, FLOOR_SIGNALS, results["floor"], stop)),
    ]
    await asyncio.sleep(0.2)
    progress(
        f"live-signals: {options.rate:g} timestamps/s for {options.duration_s:g} s, each target"
    )
    period = 1 / options.rate
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < options.duration_s:
        due = start + n * period
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        ticks = timestamp()
        await send(MarketDataKeys.raw, ticks)
        sent["pipeline"] += 1
        await asyncio.sleep(max(0.0, due + period / 2 - time.monotonic()))
        await send(FLOOR_RAW, ticks)
        sent["floor"] += 1
        n += 1
    await asyncio.sleep(1.0)  # the last ones arrive
    stop.set()
    await asyncio.gather(*readers, return_exceptions=True)
    await redis.close()
    began = time.time() - (time.monotonic() - start)
    samples = {name: [(at - began, ms) for at, ms in values] for name, values in results.items()}
    return LiveSignalReport(
        options,
        percentiles("pipeline", [ms for _, ms in results["pipeline"]]),
        sent["pipeline"],
        percentiles("floor", [ms for _, ms in results["floor"]]),
        samples,
    )


async def _until_worker_reads(redis: MultiplexedRedis, timeout_s: float = 60.0) -> None:
    """The worker holds its leases (started)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        held = await redis.execute_many(
            [("EXISTS", "og:leader:marketdata-processor"), ("EXISTS", "og:leader:signal-worker")]
        )
        if all(held):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("ordergate worker did not start")


async def _until_cycle(redis: MultiplexedRedis, ts_us: int, timeout_s: float) -> None:
    """Until a signal cycle covers the feed's time ``ts_us``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        newest = await redis.execute("XREVRANGE", MarketDataKeys.signals, "+", "-", "COUNT", 1)
        if newest and orjson.loads(pairs(newest[0][1])[b"cycle"])["ts_us"] >= ts_us:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("the history's last timestamp never reached the signals")


def _received(fields: dict[bytes, bytes]) -> int:
    if b"cycle" in fields:
        return int(orjson.loads(fields[b"cycle"])["received_ns"])
    return int(fields[b"received_ns"])


async def _read(
    url: str, stream: str, into: list[tuple[float, float]], stop: asyncio.Event
) -> None:
    """Each cycle's (arrival, unix seconds; latency, ms) into ``into``."""
    reader = MultiplexedRedis(url, reply_timeout_s=10.0)
    cursor = (await reader.execute("XREVRANGE", stream, "+", "-", "COUNT", 1) or [[b"0-0"]])[0][0]
    try:
        while not stop.is_set():
            reply = await reader.execute("XREAD", "BLOCK", 200, "STREAMS", stream, cursor)
            arrived = time.time_ns()
            for _key, entries in reply or ():
                for entry_id, fields in entries:
                    cursor = entry_id
                    into.append((arrived / 1e9, (arrived - _received(pairs(fields))) / 1e6))
    finally:
        await reader.close()


def format_report(report: LiveSignalReport) -> str:
    lines = [
        f"live signals: {report.options.symbols} symbols, one tick each per timestamp, "
        f"{report.options.rate:g} timestamps/s, {report.options.duration_s:g} s",
        f"{'target':<10}{'sent':>6}{'got':>6}{'P50 ms':>9}{'P95 ms':>9}{'P99 ms':>9}{'max ms':>9}",
    ]
    for row in (report.pipeline, report.floor):
        lines.append(
            f"{row.name:<10}{report.sent:>6}{row.count:>6}{row.p50_ms:>9.2f}{row.p95_ms:>9.2f}"
            f"{row.p99_ms:>9.2f}{row.max_ms:>9.2f}"
        )
    ratio = report.pipeline.p95_ms / report.floor.p95_ms if report.floor.p95_ms else float("nan")
    verdict = "PASS" if report.passed else "FAIL"
    lines.append(
        f"P95 {report.pipeline.p95_ms:.2f} ms (target <= {P95_TARGET_MS:g}): {verdict}; "
        f"pipeline / floor at P95: {ratio:.1f}x"
    )
    return "\n".join(lines)


def write_json(report: LiveSignalReport, path: Path) -> None:
    document: dict[str, Any] = {
        "options": asdict(report.options),
        "pipeline": asdict(report.pipeline),
        "floor": asdict(report.floor),
        "sent": report.sent,
        "target_p95_ms": P95_TARGET_MS,
        "passed": report.passed,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


def command(args: Any) -> int:
    options = LiveSignalOptions(
        symbols=args.symbols, rate=args.rate, duration_s=args.duration, history=args.history
    )
    report = run_live_signals(options)
    print(format_report(report))
    if args.json is not None:
        write_json(report, args.json)
    return 0 if report.passed else 1
