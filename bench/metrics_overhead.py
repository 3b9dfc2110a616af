"""``python -m bench metrics``: what the gateway's instrumentation costs one order.

Runs, per order, exactly what the order path records: the request id and the logs' context
variables, the timer's laps through every stage, the stages' histograms and the outcome, the
in-flight gauge, the request metrics and the SLA (and a debug log call, off at info). Its
floor, in the same run, interleaved batch by batch: the same loop doing nothing. Both in
prometheus_client's multiprocess mode (as ``ordergate serve`` runs: every value an mmap
write) and in one process's registry. Prints per-order P50/P95/P99 over the batches.

CPU work in one process, so no arrival rate: the batches alternate thing and floor.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from time import perf_counter
from typing import Any

from bench.latency import Percentiles, percentiles

TARGET_US = 50.0
BATCH = 1000


def run(batches: int, json_path: Path | None) -> int:
    results = {mode: measure(mode, batches) for mode in ("multiprocess", "single-process")}
    print(f"instrumentation per order ({batches} batches of {BATCH}, floor interleaved)")
    print(f"{'mode':<16}{'P50 us':>10}{'P95 us':>10}{'P99 us':>10}{'floor P50':>11}  verdict")
    met = True
    for mode, result in results.items():
        cost, floor = result["cost"], result["floor"]
        ok = cost["p95"] <= TARGET_US
        met &= ok
        print(
            f"{mode:<16}{cost['p50']:>10.2f}{cost['p95']:>10.2f}{cost['p99']:>10.2f}"
            f"{floor['p50']:>11.2f}  {'PASS' if ok else 'FAIL'} (P95 <= {TARGET_US:g} us)"
        )
    if json_path is not None:
        json_path.write_text(json.dumps({"target_us": TARGET_US, **results}, indent=2))
    return 0 if met else 1


def measure(mode: str, batches: int) -> dict[str, Any]:
    """Per-order microseconds, ``cost`` and ``floor`` (p50, p95, p99), in a fresh
    interpreter: prometheus_client picks its mode when first imported."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    with tempfile.TemporaryDirectory(prefix="og-bench-metrics-") as directory:
        if mode == "multiprocess":
            env["PROMETHEUS_MULTIPROC_DIR"] = directory
        out = subprocess.run(
            [sys.executable, "-c", f"import bench.metrics_overhead as m; m.child({batches})"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def child(batches: int) -> None:
    import logging

    from app.logs import ACCOUNT, CLIENT_ORDER_ID, ORDER_ID, REQUEST_ID, request_id_from
    from app.services.metrics import ORDERS_IN_FLIGHT, record_request
    from app.services.order_timing import OrderTimer, Stage, record_order_entry

    log = logging.getLogger("app.services.orders")
    log.setLevel(logging.INFO)

    def one_order() -> None:
        started = perf_counter()
        REQUEST_ID.set(request_id_from(None))
        timer = OrderTimer()
        ACCOUNT.set("acc")
        timer.lap(Stage.AUTH)
        timer.mark()
        ORDERS_IN_FLIGHT.inc()
        ORDER_ID.set("01M995Q8D1ER2FF8ZBW3ZJK6RA")
        CLIENT_ORDER_ID.set("c-1")
        timer.lap(Stage.RISK)
        timer.lap_guard(0.0)
        timer.lap(Stage.PERSIST)
        timer.lap(Stage.BROKER)
        timer.lap(Stage.PERSIST)
        log.debug("order accepted: %s %s %s", "buy", 1, "AAPL")
        ORDERS_IN_FLIGHT.dec()
        timer.record()
        elapsed = perf_counter() - started
        record_request("/v1/orders", "POST", "2xx", elapsed)
        record_order_entry(elapsed, 0.2)

    def nothing() -> None:
        pass

    def per_order_us(work: Any) -> float:
        started = perf_counter()
        for _ in range(BATCH):
            work()
        return (perf_counter() - started) / BATCH * 1e6

    for _ in range(20):  # warm up: series created, files mapped
        per_order_us(one_order)
    cost: list[float] = []
    floor: list[float] = []
    for _ in range(batches):
        cost.append(per_order_us(one_order))
        floor.append(per_order_us(nothing))
    print(
        json.dumps(
            {"cost": _dict(percentiles("cost", cost)), "floor": _dict(percentiles("floor", floor))}
        )
    )


def _dict(p: Percentiles) -> dict[str, float]:
    # The samples are microseconds; Percentiles names its fields in ms.
    return {"p50": p.p50_ms, "p95": p.p95_ms, "p99": p.p99_ms}
