"""``python -m bench signals`` at tiny sizes: every call made and counted, the JSON written,
the child process's memory read, and production equal to the reference on the bench's own
panel. Never timed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from app.domain.signal_math import signal_pipeline
from bench import main
from bench.signal_reference import pipeline_reference
from bench.signals import SignalBenchOptions, bench_weights, make_panel, run_signal_bench
from bench.signals_report import format_table

TINY = SignalBenchOptions(
    runs=9,
    reference_runs=2,
    method_runs=3,
    large_runs=2,
    small_shape=(7, 12, 3),
    large_shape=(5, 40, 4),
)


def test_the_signal_bench_times_every_call_and_measures_the_large_panel() -> None:
    report = run_signal_bench(TINY, progress=lambda _: None)

    small = report.small
    assert small is not None
    assert small.shape == (7, 12, 3)
    assert (small.production.runs, small.reference.runs) == (9, 2)
    assert (small.symmetric.runs, small.sequential.runs, small.fresh_buffers.runs) == (3, 3, 3)
    for timing in (small.production, small.reference, small.symmetric, small.sequential):
        assert 0 < timing.min_ms <= timing.p50_ms <= timing.p95_ms <= timing.p99_ms
        assert timing.p99_ms <= timing.max_ms
        assert timing.page_faults_p50 >= 0
    assert small.max_abs_difference <= 1e-9

    large = report.large
    assert large is not None
    assert large.input_bytes == 5 * 40 * 4 * 8
    assert len(large.wall_s) == len(large.fresh_buffers_s) == 2
    assert large.traced_peak_bytes > 0
    assert large.rss_peak_bytes is not None, large.rss_note
    assert large.rss_peak_bytes >= 0

    assert set(report.verdicts()) == {"median", "ratio", "large_wall", "large_peak"}
    table = format_table(report)
    assert "reference/production (medians):" in table
    assert "peak beyond the input: tracemalloc" in table
    assert "load average" in table


def test_production_equals_the_reference_on_the_bench_panel() -> None:
    panel = make_panel(TINY.small_shape, TINY.nan_fraction, TINY.seed)
    assert np.isnan(panel).any()
    weights = bench_weights(panel.shape[2])
    np.testing.assert_allclose(
        signal_pipeline(panel, weights), pipeline_reference(panel, weights), rtol=0, atol=1e-9
    )
    again = make_panel(TINY.small_shape, TINY.nan_fraction, TINY.seed)
    np.testing.assert_array_equal(panel, again)  # the same panel for the same seed


def test_the_command_line_writes_the_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "signals.json"
    argv = ["signals", "--no-large", "--runs", "3", "--reference-runs", "1"]
    assert main([*argv, "--method-runs", "1", "--json", str(path)]) == 0
    assert "production median <= 2 ms:" in capsys.readouterr().out
    written = json.loads(path.read_text())
    assert written["benchmark"] == "signals"
    assert written["small"]["production"]["runs"] == 3
    assert written["small"]["shape"] == [252, 60, 6]
    assert written["large"] is None
    assert written["verdicts"]["large_wall"] is None
