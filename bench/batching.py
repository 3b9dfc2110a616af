"""``python -m bench batching``: the order bench with placement batching off (``latency``)
and on (``throughput``), at the same arrival rates.

For each rate, the two modes take turns, ``--runs`` times each; every run is a whole
``bench orders`` run (its own Redis, gateway and floor, measured in the same run), so each
mode's figures come with their own floor. Prints the medians per rate and mode.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass, replace

from bench.orders import BenchOptions, _progress, exit_code, run_orders_bench
from bench.report import BenchReport

MODES = ("latency", "throughput")


@dataclass(frozen=True, slots=True)
class RunFigures:
    rate: float
    mode: str
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int
    closed_per_s: float
    floor_per_s: float
    server_cpu_us: float | None  # per order, in the best closed loop

    @property
    def ratio(self) -> float:
        return self.closed_per_s / self.floor_per_s


def figures(rate: float, mode: str, report: BenchReport) -> RunFigures:
    open_loop = report.find("gateway", closed=False)
    closed = report.find("gateway", closed=True)
    floor = report.find("floor", closed=True)
    if open_loop is None or closed is None or floor is None:
        raise RuntimeError("a phase measured nothing")
    if open_loop.p50_ms is None or open_loop.p95_ms is None or open_loop.p99_ms is None:
        raise RuntimeError(f"no order answered at {rate:g}/s in {mode} mode")
    cpu = [r.server_cpu_us for r in report.rows if r.target == "gateway" and r.result is closed]
    return RunFigures(
        rate,
        mode,
        open_loop.p50_ms,
        open_loop.p95_ms,
        open_loop.p99_ms,
        open_loop.error_count,
        closed.achieved_per_s,
        floor.achieved_per_s,
        cpu[0] if cpu else None,
    )


def run(options: BenchOptions, rates: list[float], runs: int) -> list[RunFigures]:
    results: list[RunFigures] = []
    for rate in rates:
        for turn in range(runs):
            for mode in MODES if turn % 2 == 0 else MODES[::-1]:
                _progress(f"--- {rate:g}/s, placement batching {mode}, run {turn + 1}/{runs}")
                env = {**options.gateway_env, "ORDERGATE_PLACEMENT_BATCHING__MODE": mode}
                report = run_orders_bench(replace(options, rate=rate, gateway_env=env))
                results.append(figures(rate, mode, report))
    return results


def table(results: list[RunFigures]) -> str:
    lines = [
        "rate/s  mode        runs  P50 ms  P95 ms  P99 ms  errors  closed/s  floor/s  ratio"
        "  cpu us/order",
        "-" * 94,
    ]
    keys = dict.fromkeys((r.rate, r.mode) for r in results)
    for rate, mode in keys:
        rows = [r for r in results if (r.rate, r.mode) == (rate, mode)]

        def med(values: list[float]) -> float:
            return statistics.median(values)

        cpus = [r.server_cpu_us for r in rows if r.server_cpu_us is not None]
        cpu = f"{med(cpus):12.0f}" if cpus else f"{'-':>12}"
        lines.append(
            f"{rate:6g}  {mode:<10}  {len(rows):4d}  {med([r.p50_ms for r in rows]):6.2f}"
            f"  {med([r.p95_ms for r in rows]):6.2f}  {med([r.p99_ms for r in rows]):6.2f}"
            f"  {sum(r.errors for r in rows):6d}  {med([r.closed_per_s for r in rows]):8.0f}"
            f"  {med([r.floor_per_s for r in rows]):7.0f}  {med([r.ratio for r in rows]):5.2f}"
            f"  {cpu}"
        )
    lines.append("medians of the runs; closed/s: the best closed loop; ratio: closed/s / floor's")
    return "\n".join(lines)


def command(args: argparse.Namespace) -> int:
    def body() -> None:
        results = run(BenchOptions.from_args(args), args.rates, args.runs)
        print(table(results), flush=True)

    return exit_code("batching", body)
