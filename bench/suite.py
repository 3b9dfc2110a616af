"""``python -m bench suite`` (``make bench``): every stage's benchmark in one run, each at a
suite-sized duration, one table against the targets, results under ``bench-results/``.

Each stage runs its own bench's functions, shortened, with its floor in the same run:

- ``orders-sqlite``, ``orders-postgresql``: ``bench orders`` (open loop at 500/s, then a
  closed loop at c=128 in two slices a target). PostgreSQL on a throwaway database of the
  local server (``--postgres-url``); a server that cannot be reached is a SKIP, with why;
- ``risk``: ``bench risk``, open loop only; ``guard``: ``bench guard`` (breaker and pacing);
- ``stream``: ``bench stream``, one run a target at 100 subscribers and 200 reports/s;
- ``signals``: ``bench signals``, the small panel only (the 1.2 GB one: ``make
  bench-signals``);
- ``live-signals``: ``bench live-signals`` at 500 symbols;
- ``metrics``: ``bench metrics``, the instrumentation's cost per order (multiprocess mode);
- ``scaling``: ``bench scaling``.

Progress, a line as each stage starts and ends with the time since the suite began, goes to
stderr; the table to stdout. Written: ``results.json`` (every row, its raw samples, the
scaling points and the machine), ``summary.md``, ``latency_over_time.png``,
``percentiles.png`` and ``scaling.png``. Exit status 1 if any stage FAILs (a SKIP does not).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from redis.exceptions import RedisError

from app.config import get_settings
from bench import metrics_overhead, plots
from bench.databases import DEFAULT_POSTGRES_URL, unreachable
from bench.guard import OVERHEAD_P95_TARGET_MS, GuardBenchOptions, run_guard_bench
from bench.live_signals import P95_TARGET_MS as LIVE_P95_MS
from bench.live_signals import LiveSignalOptions, run_live_signals
from bench.orders import BenchOptions, run_orders_bench
from bench.report import P95_TARGET_MS, P99_TARGET_MS, RATIO_TARGET, BenchReport
from bench.risk import RiskBenchOptions, run_risk_bench
from bench.risk_report import P95_TARGET_MS as RISK_P95_MS
from bench.risk_report import P99_TARGET_MS as RISK_P99_MS
from bench.risk_report import RiskPhase
from bench.scaling import ScalingOptions, run_scaling
from bench.signals import SignalBenchOptions, run_signal_bench
from bench.signals_report import MEDIAN_TARGET_MS
from bench.signals_report import RATIO_TARGET as SIGNAL_RATIO
from bench.stream import P95_TARGET_MS as STREAM_P95_MS
from bench.stream import StreamOptions
from bench.stream import run as run_stream
from bench.suite_report import (
    FAIL,
    SKIP,
    StageResult,
    SuiteReport,
    format_markdown,
    format_table,
    machine,
    verdict,
)

STAGES = (
    "orders-sqlite",
    "orders-postgresql",
    "risk",
    "guard",
    "stream",
    "signals",
    "live-signals",
    "metrics",
    "scaling",
)
Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class SuiteOptions:
    stages: tuple[str, ...] = STAGES
    out: Path = Path("bench-results")
    postgres_url: str = DEFAULT_POSTGRES_URL
    rate: float = 500.0  # the order path's, the risk decision's and the guard's
    orders_s: float = 4.0  # each open-loop phase
    orders_closed_s: float = 2.0  # each target's closed loop at c=128, in two slices
    warmup_s: float = 1.0
    inprocess_s: float = 3.0  # risk and guard: each target's open loop
    stream_s: float = 4.0
    stream_subscribers: int = 100
    signal_runs: int = 100
    reference_runs: int = 5
    live_s: float = 8.0
    live_symbols: int = 500
    live_history: int = 62
    metrics_batches: int = 100  # of 1,000 orders' instrumentation each
    scaling: ScalingOptions = field(default_factory=lambda: ScalingOptions(seconds=2.0))


class Skipped(Exception):
    """A stage that could not run here, and why (not a failure of the gateway)."""


class Clock:
    """Progress lines stamped with the time since the suite began."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def say(self, message: str) -> None:
        print(f"[{self.elapsed:6.1f} s] {message}", file=sys.stderr, flush=True)

    def inner(self, message: str) -> None:
        self.say(f"    {message}")


def run_suite(options: SuiteOptions, clock: Clock | None = None) -> SuiteReport:
    clock = clock or Clock()
    settings = {k: str(v) for k, v in dataclasses.asdict(options).items()}
    report = SuiteReport(settings=settings, machine=machine())
    for stage in options.stages:
        clock.say(f"{stage}: start")
        began = clock.elapsed
        try:
            rows = _RUNNERS[stage](options, report, clock.inner)
        except Skipped as why:
            rows = [StageResult(stage, "-", SKIP, note=str(why))]
        except (RuntimeError, OSError, ValueError, RedisError, subprocess.SubprocessError) as exc:
            rows = [StageResult(stage, "-", FAIL, note=f"did not run to its end: {exc}")]
        for row in rows:
            row.elapsed_s = clock.elapsed - began
        report.rows += rows
        verdicts = "; ".join(f"{row.stage} {row.verdict}" for row in rows)
        clock.say(f"{stage}: done in {clock.elapsed - began:.1f} s: {verdicts}")
    report.wall_s = clock.elapsed
    report.machine["load_after"] = list(os.getloadavg())
    report.machine["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return report


def write_results(report: SuiteReport, out: Path, command: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    report.write_json(out / "results.json")
    (out / "summary.md").write_text(format_markdown(report, command))
    stages = [
        plots.StagePlot(row.stage, row.series, row.clock) for row in report.rows if row.series
    ]
    written = [out / "results.json", out / "summary.md"]
    if stages:
        written.append(plots.latency_over_time(stages, out / "latency_over_time.png"))
        written.append(plots.percentile_curves(stages, out / "percentiles.png"))
    if report.scaling:
        written.append(plots.scaling_plot(report.scaling, out / "scaling.png"))
    return written


# -- the stages --------------------------------------------------------------------------------
Runner = Callable[[SuiteOptions, SuiteReport, Progress], list[StageResult]]


def _orders(database: str) -> Runner:
    def run(options: SuiteOptions, _: SuiteReport, progress: Progress) -> list[StageResult]:
        if database == "postgresql":
            reason = unreachable(options.postgres_url)
            if reason is not None:
                raise Skipped(reason)
        bench = BenchOptions(
            rate=options.rate,
            duration_s=options.orders_s,
            max_duration_s=options.orders_closed_s,
            connections=(128,),
            rounds=2,
            warmup_s=options.warmup_s,
            database=database,
            postgres_url=options.postgres_url,
        )
        return orders_rows(f"orders {database}", run_orders_bench(bench, progress))

    return run


def orders_rows(name: str, report: BenchReport) -> list[StageResult]:
    gateway, floor = report.find("gateway", False), report.find("floor", False)
    if gateway is None or floor is None:
        raise RuntimeError("the open loop measured nothing")
    met = report.verdicts()
    rate = f"{gateway.offered_per_s or 0:g}/s"
    latency = StageResult(
        f"{name} @ {rate}",
        f"{rate} kept, P95 <= {P95_TARGET_MS:g}, P99 <= {P99_TARGET_MS:g} ms",
        verdict(met["sustained"], met["p95"], met["p99"]),
        gateway.p50_ms,
        gateway.p95_ms,
        gateway.p99_ms,
        floor.p95_ms,
        _ratio(gateway.p95_ms, floor.p95_ms),
        f"{gateway.achieved_per_s:.0f}/s, {gateway.error_count} errors",
        series=[
            plots.Series(p_name, p.sent_at_s, [x * 1000 for x in p.latencies_s])
            for p_name, p in (("gateway", gateway), ("floor", floor))
        ],
        details=report.to_json(),
    )
    best, floor_best = report.find("gateway", True), report.find("floor", True)
    rows = [latency]
    if best is not None and floor_best is not None:
        rows.append(
            StageResult(
                f"{name} max throughput",
                f">= {RATIO_TARGET:.2f} x floor's",
                verdict(met["ratio"]),
                ratio=report.ratio,
                note=f"{best.achieved_per_s:,.0f}/s vs floor {floor_best.achieved_per_s:,.0f}/s "
                f"({best.mode})",
            )
        )
    return rows


def _risk(options: SuiteOptions, _: SuiteReport, progress: Progress) -> list[StageResult]:
    bench = RiskBenchOptions(
        rate=options.rate, seconds=options.inprocess_s, warmup_s=options.warmup_s, closed_seconds=0
    )
    report = run_risk_bench(bench, get_settings(), progress)
    decision, floor = report.find("decision", False), report.find("floor", False)
    if decision is None or floor is None:
        raise RuntimeError("the open loop measured nothing")
    met = report.verdicts()
    return [
        _in_process_row(
            "risk decision",
            f"P95 <= {RISK_P95_MS:g}, P99 <= {RISK_P99_MS:g} ms",
            verdict(met["sustained"], met["p95"], met["p99"]),
            decision,
            floor,
            f"{decision.accepted} accepted, {sum(decision.rejected.values())} rejected",
        )
    ]


def _guard(options: SuiteOptions, _: SuiteReport, progress: Progress) -> list[StageResult]:
    bench = GuardBenchOptions(
        rate=options.rate, seconds=options.inprocess_s, warmup_s=options.warmup_s
    )
    report = run_guard_bench(bench, get_settings(), progress)
    overhead = report.overhead_p95_ms
    row = _in_process_row(
        "breaker + pacing",
        f"P95 - floor's <= {OVERHEAD_P95_TARGET_MS:g} ms",
        verdict(report.passed),
        report.guard,
        report.floor,
        "-" if overhead is None else f"{overhead:+.3f} ms over the floor at P95",
    )
    row.details = report.to_json()
    return [row]


def _in_process_row(
    stage: str, target: str, met: str, measured: RiskPhase, floor: RiskPhase, note: str
) -> StageResult:
    return StageResult(
        stage,
        target,
        met,
        measured.p50_ms,
        measured.p95_ms,
        measured.p99_ms,
        floor.p95_ms,
        _ratio(measured.p95_ms, floor.p95_ms),
        note,
        series=[
            plots.Series(p.target, p.due_s, [x * 1000 for x in p.latencies_s])
            for p in (measured, floor)
        ],
        details={p.target: p.summary() for p in (measured, floor)},
    )


def _stream(options: SuiteOptions, _: SuiteReport, progress: Progress) -> list[StageResult]:
    bench = StreamOptions(
        subscribers=options.stream_subscribers,
        duration_s=options.stream_s,
        warmup_s=options.warmup_s,
        runs=1,
    )
    figures = {f.target: f for f in run_stream(bench, progress)}
    gateway, floor = figures["gateway"], figures["floor"]
    received = gateway.frames_per_s / gateway.expected_frames_per_s
    return [
        StageResult(
            f"stream {bench.subscribers} subs x {bench.rates[0]:g}/s",
            f"P95 <= {STREAM_P95_MS:g} ms, every report delivered",
            verdict(gateway.p95_ms <= STREAM_P95_MS, received >= 0.99, gateway.closed == 0),
            gateway.p50_ms,
            gateway.p95_ms,
            gateway.p99_ms,
            floor.p95_ms,
            _ratio(gateway.p95_ms, floor.p95_ms),
            f"{received:.1%} of reports received, {gateway.closed} subscribers closed",
            series=[plots.Series(f.target, f.arrived_s, f.latencies_ms) for f in (gateway, floor)],
            details={
                t: {**dataclasses.asdict(f), "latencies_ms": None, "arrived_s": None}
                for t, f in figures.items()
            },
        )
    ]


def _signals(options: SuiteOptions, _: SuiteReport, progress: Progress) -> list[StageResult]:
    bench = SignalBenchOptions(
        runs=options.signal_runs,
        reference_runs=options.reference_runs,
        method_runs=max(1, options.signal_runs // 10),
        large=False,
    )
    report = run_signal_bench(bench, progress)
    small = report.small
    if small is None:
        raise RuntimeError("the small panel measured nothing")
    met = report.verdicts()
    production, reference = small.production, small.reference
    return [
        StageResult(
            f"signals {small.shape}",
            f"median <= {MEDIAN_TARGET_MS:g} ms, reference/production >= {SIGNAL_RATIO:g}x",
            verdict(met["median"], met["ratio"]),
            production.p50_ms,
            production.p95_ms,
            production.p99_ms,
            reference.p95_ms,
            _ratio(production.p95_ms, reference.p95_ms),
            f"reference/production {small.ratio:.1f}x (medians); large panel not run",
            series=[
                _calls(production.name, production.samples_ms),
                _calls(reference.name, reference.samples_ms),
            ],
            clock="s of the target's own calls, one after another",
            details=report.to_json(),
        )
    ]


def _calls(name: str, samples_ms: tuple[float, ...]) -> plots.Series:
    at, total = [], 0.0
    for ms in samples_ms:
        at.append(total)
        total += ms / 1000
    return plots.Series(name, at, list(samples_ms))


def _live(options: SuiteOptions, _: SuiteReport, progress: Progress) -> list[StageResult]:
    bench = LiveSignalOptions(
        symbols=options.live_symbols, duration_s=options.live_s, history=options.live_history
    )
    report = run_live_signals(bench, progress)
    pipeline, floor = report.pipeline, report.floor
    return [
        StageResult(
            f"live signals {bench.symbols} symbols",
            f"P95 <= {LIVE_P95_MS:g} ms, every cycle",
            verdict(report.passed),
            pipeline.p50_ms,
            pipeline.p95_ms,
            pipeline.p99_ms,
            floor.p95_ms,
            _ratio(pipeline.p95_ms, floor.p95_ms),
            f"{pipeline.count} of {report.sent} cycles",
            series=[
                plots.Series(name, [t for t, _ in values], [ms for _, ms in values])
                for name, values in report.samples.items()
            ],
        )
    ]


def _metrics(options: SuiteOptions, _: SuiteReport, progress: Progress) -> list[StageResult]:
    progress("instrumentation per order, multiprocess mode (as serve runs)")
    result = metrics_overhead.measure("multiprocess", options.metrics_batches)
    cost, floor = result["cost"], result["floor"]
    return [
        StageResult(
            "instrumentation per order",
            f"P95 <= {metrics_overhead.TARGET_US / 1000:g} ms",
            verdict(cost["p95"] <= metrics_overhead.TARGET_US),
            cost["p50"] / 1000,
            cost["p95"] / 1000,
            cost["p99"] / 1000,
            floor["p95"] / 1000,
            None,  # the floor is an empty loop: a ratio to it says nothing
            f"{cost['p50']:.1f} us at P50, batches of {metrics_overhead.BATCH}",
            details=result,
        )
    ]


def _scaling(options: SuiteOptions, report: SuiteReport, progress: Progress) -> list[StageResult]:
    points = run_scaling(options.scaling, progress)
    report.scaling, report.scaling_options = points, options.scaling
    worst = max(points, key=lambda p: p.p95_vs_empty or 0.0)
    failed = sum(not p.passed for p in points)
    trouble = next((f"; {p.name}: {p.note}" for p in points if p.note), "")
    return [
        StageResult(
            "scaling (worst point)",
            f"P95 <= {1 + options.scaling.tolerance:g} x empty's, memory ~ data",
            verdict(failed == 0),
            worst.p50_ms,
            worst.p95_ms,
            worst.p99_ms,
            points[0].p95_ms,
            worst.p95_vs_empty,
            f"worst {worst.name}; {failed} of {len(points)} points fail (floor: the empty "
            f"case, {points[0].name}){trouble}",
        )
    ]


_RUNNERS: dict[str, Runner] = {
    "orders-sqlite": _orders("sqlite"),
    "orders-postgresql": _orders("postgresql"),
    "risk": _risk,
    "guard": _guard,
    "stream": _stream,
    "signals": _signals,
    "live-signals": _live,
    "metrics": _metrics,
    "scaling": _scaling,
}


def _ratio(value: float | None, floor: float | None) -> float | None:
    return None if value is None or not floor else value / floor


def command(args: argparse.Namespace) -> int:
    """Entry point of ``python -m bench suite``."""
    options = SuiteOptions(stages=tuple(args.stages), out=args.out, postgres_url=args.postgres_url)
    clock = Clock()
    try:
        report = run_suite(options, clock)
    except KeyboardInterrupt:
        clock.say("interrupted; everything started has been stopped")
        return 130
    print(format_table(report), flush=True)
    written = write_results(report, options.out, "python -m bench suite")
    clock.say(f"wrote {', '.join(str(p) for p in written)}")
    return 1 if report.failed else 0
