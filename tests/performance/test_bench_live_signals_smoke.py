"""``python -m bench live-signals`` and ``python -m bench strategy`` at tiny sizes: every
timestamp sent reaches the signals, every path is timed. They never check how fast."""

from __future__ import annotations

import json
from pathlib import Path

from bench.live_signals import LiveSignalOptions, format_report, run_live_signals, write_json
from bench.strategy_loop import StrategyBenchOptions, run_strategy_bench


def test_the_live_signal_bench_times_every_timestamp_through_the_worker_and_the_floor(
    tmp_path: Path,
) -> None:
    options = LiveSignalOptions(symbols=20, rate=10.0, duration_s=1.0, history=3)
    report = run_live_signals(options, progress=lambda _: None)

    assert report.sent >= 9
    assert report.pipeline.count == report.sent  # a cycle for each timestamp
    assert report.floor.count == report.sent
    assert "pipeline" in format_report(report)
    write_json(report, tmp_path / "live.json")
    assert json.loads((tmp_path / "live.json").read_text())["sent"] == report.sent


def test_the_strategy_bench_times_strategy_orders_and_the_order_path_floor() -> None:
    options = StrategyBenchOptions(duration_s=2.0, rounds_per_s=20.0, interval_s=0.5)
    report = run_strategy_bench(options, progress=lambda _: None)

    counts = {row.name: row.count for row in report.rows}
    assert counts["strategy tick->fill"] > 0
    assert counts["strategy tick->ack"] > 0
    assert counts["floor send->ack"] >= 3
    assert counts["floor send->fill"] >= 3
