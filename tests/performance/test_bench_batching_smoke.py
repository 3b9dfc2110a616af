"""``python -m bench batching`` at a tiny size: both modes run against real servers and the
table has a row per rate and mode. Never timed."""

from __future__ import annotations

import pytest

from bench import main


def test_the_batching_bench_runs_both_modes_and_prints_their_rows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    tiny = ["--duration", "1", "--warmup", "0.3", "--max-duration", "0.6", "--rounds", "2"]
    assert main(["batching", "--rates", "100", "--runs", "1", *tiny]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    modes = [row[1] for row in rows if row and row[0] == "100"]
    assert modes == ["latency", "throughput"]
    for row in rows:
        if row and row[0] == "100":
            p50, p95, p99 = (float(v) for v in row[3:6])
            assert 0 < p50 <= p95 <= p99
            assert row[6] == "0"  # no order failed


def test_the_batching_bench_refuses_bad_rates(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["batching", "--rates", "100,-5"])
    assert exit_.value.code == 2
    assert "rates must be positive" in capsys.readouterr().err
