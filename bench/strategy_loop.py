"""``python -m bench strategy``: the whole loop, tick -> signal -> intent -> risk -> order ->
fill -> WebSocket, timed against the original system's 200 ms SLA, beside the order path
alone in the same run.

A private Redis, a SQLite order log and ``ordergate serve`` (two workers; the applier and
the worker beside them) with the simulated feed and the strategy on. The feed sends one
tick per symbol per round (``--rounds-per-s``), each round a minute of the feed's clock, so
the signals' history fills within seconds. The strategy rebalances on the newest cycle
every ``--interval`` seconds. Each strategy order's client_order_id carries when its
cycle's first tick reached the gateway, so for each order:

- tick -> ack: to its ``new`` report's time stamp (the gateway's acknowledgement);
- tick -> fill: to its ``fill`` report's arrival at a WebSocket subscriber here.

The floor, in the same run and at the same pace, is the order path alone: a market order
POSTed by this process for an account of its own, timed from its send to the answer and
to its fill's arrival on the stream. One clock: every process is on this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import uvloop
import websockets

from app.redisio.embedded import EmbeddedRedis
from bench.databases import order_log_url
from bench.latency import Percentiles, percentiles
from bench.orders import HOST, _environment, _progress, _start_gateway
from bench.procs import free_port

SLA_MS = 200.0


@dataclass(frozen=True, slots=True)
class StrategyBenchOptions:
    duration_s: float = 60.0
    rounds_per_s: float = 4.0  # the feed: a tick per symbol per round
    interval_s: float = 1.0  # the strategy's rebalance interval, and the floor's pace
    warmup_timeout_s: float = 60.0


@dataclass(frozen=True, slots=True)
class StrategyReport:
    options: StrategyBenchOptions
    rows: list[Percentiles]

    @property
    def passed(self) -> bool:
        strategy = [r for r in self.rows if r.name.startswith("strategy")]
        return bool(strategy) and all(r.count > 0 and r.p95_ms <= SLA_MS for r in strategy)


FEED_ENV = {
    "ORDERGATE_MARKETDATA__FEED": "simulated",
    "ORDERGATE_MARKETDATA__SIMULATED__TIME_SCALE": "",  # set per run: a minute per round
    "ORDERGATE_MARKETDATA__SIMULATED__VOLATILITY": "0.5",
    "ORDERGATE_STRATEGY__ENABLED": "true",
}


def run_strategy_bench(
    options: StrategyBenchOptions, progress: Callable[[str], None] = _progress
) -> StrategyReport:
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="og-bench-strategy-")))
        redis = EmbeddedRedis(port=free_port()).start()
        stack.callback(redis.stop)
        database_url = stack.enter_context(order_log_url("sqlite", "", tmp))
        extra = {
            **FEED_ENV,
            "ORDERGATE_MARKETDATA__SIMULATED__ROUNDS_PER_S": str(options.rounds_per_s),
            "ORDERGATE_MARKETDATA__SIMULATED__TIME_SCALE": str(60 * options.rounds_per_s),
            "ORDERGATE_STRATEGY__REBALANCE_INTERVAL_S": str(options.interval_s),
        }
        env = _environment(tmp, redis.url, database_url, extra)
        gateway = stack.enter_context(_start_gateway(env, tmp, progress, workers=2))
        return uvloop.run(
            _measure(options, tmp / "strategy-api-key", gateway.port, gateway.headers, progress)
        )


async def _measure(
    options: StrategyBenchOptions,
    key_file: Path,
    port: int,
    floor_headers: dict[str, str],
    progress: Callable[[str], None],
) -> StrategyReport:
    deadline = time.monotonic() + options.warmup_timeout_s
    while not await asyncio.to_thread(key_file.exists):
        if time.monotonic() > deadline:
            raise RuntimeError("the strategy never started")
        await asyncio.sleep(0.2)
    key = (await asyncio.to_thread(key_file.read_text)).strip()
    strategy_headers = {"Authorization": f"Bearer {key}"}
    url = f"ws://{HOST}:{port}/v1/stream"
    samples: dict[str, list[float]] = {
        "strategy tick->ack": [], "strategy tick->fill": [],
        "floor send->ack": [], "floor send->fill": [],
    }  # fmt: skip
    measuring = asyncio.Event()
    first_fill = asyncio.Event()

    async def follow(headers: dict[str, str], prefix: str, name: str) -> None:
        async with websockets.connect(url, additional_headers=headers) as ws:
            await ws.send(json.dumps({"op": "subscribe", "channels": ["executions"]}))
            async for frame in ws:
                arrived = time.time_ns()
                for message in json.loads(frame):
                    if message.get("type") != "execution":
                        continue
                    coid = message["order"]["client_order_id"] or ""
                    if not coid.startswith(prefix):
                        continue
                    sent_ns = int(coid[1:].split("-", 1)[0])
                    if message["event"] == "fill":
                        first_fill.set()
                        if measuring.is_set():
                            samples[f"{name}->fill"].append((arrived - sent_ns) / 1e6)
                    elif (
                        message["event"] == "new" and name == "strategy tick" and measuring.is_set()
                    ):
                        acked = datetime.fromisoformat(message["ts"]).timestamp() * 1e9
                        samples["strategy tick->ack"].append((acked - sent_ns) / 1e6)

    followers = [
        asyncio.create_task(follow(strategy_headers, "s", "strategy tick")),
        asyncio.create_task(follow(floor_headers, "f", "floor send")),
    ]
    progress("strategy: waiting for the signals' history and the first rebalance")
    await asyncio.wait_for(first_fill.wait(), timeout=options.warmup_timeout_s)
    measuring.set()
    progress(f"strategy: measuring for {options.duration_s:g} s")
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", headers=floor_headers) as client:
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < options.duration_s:
            await asyncio.sleep(max(0.0, start + n * options.interval_s - time.monotonic()))
            sent_ns = time.time_ns()
            answer = await client.post(
                "/v1/orders",
                json={
                    "symbol": "AAPL", "side": "buy" if n % 2 == 0 else "sell", "qty": "1",
                    "type": "market", "client_order_id": f"f{sent_ns}-{secrets.token_hex(3)}",
                    "allow_duplicate": True,
                },
            )  # fmt: skip
            if answer.status_code == 201:
                samples["floor send->ack"].append((time.time_ns() - sent_ns) / 1e6)
            n += 1
    await asyncio.sleep(1.0)  # the last fills arrive
    for task in followers:
        task.cancel()
    await asyncio.gather(*followers, return_exceptions=True)
    return StrategyReport(options, [percentiles(name, values) for name, values in samples.items()])


def format_report(report: StrategyReport) -> str:
    o = report.options
    lines = [
        f"strategy loop: feed {o.rounds_per_s:g} rounds/s, rebalance every {o.interval_s:g} s, "
        f"{o.duration_s:g} s measured; SLA P95 <= {SLA_MS:g} ms",
        f"{'path':<22}{'n':>6}{'P50 ms':>9}{'P95 ms':>9}{'P99 ms':>9}{'max ms':>9}",
    ]
    for row in report.rows:
        lines.append(
            f"{row.name:<22}{row.count:>6}{row.p50_ms:>9.2f}{row.p95_ms:>9.2f}{row.p99_ms:>9.2f}"
            f"{row.max_ms:>9.2f}"
        )
    lines.append(f"strategy within the SLA: {'PASS' if report.passed else 'FAIL'}")
    return "\n".join(lines)


def write_json(report: StrategyReport, path: Path) -> None:
    document: dict[str, Any] = {
        "options": asdict(report.options),
        "rows": [asdict(r) for r in report.rows],
        "sla_ms": SLA_MS,
        "passed": report.passed,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


def command(args: Any) -> int:
    options = StrategyBenchOptions(
        duration_s=args.duration, rounds_per_s=args.rounds_per_s, interval_s=args.interval
    )
    report = run_strategy_bench(options)
    print(format_report(report))
    if args.json is not None:
        write_json(report, args.json)
    return 0 if report.passed else 1
