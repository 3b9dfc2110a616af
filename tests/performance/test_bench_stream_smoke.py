"""``python -m bench stream`` at a tiny size: the floor and the gateway run with real
subscribers, and the table has a row for each with every report received. Never timed."""

from __future__ import annotations

import pytest

from bench import main


def test_the_stream_bench_measures_the_floor_and_the_gateway(
    capsys: pytest.CaptureFixture[str],
) -> None:
    tiny = ["--subscribers", "3", "--duration", "1", "--warmup", "0.3", "--runs", "1"]
    assert main(["stream", "--rates", "60", *tiny]) == 0
    rows = {
        row[0]: row
        for row in (line.split() for line in capsys.readouterr().out.splitlines())
        if row and row[0] in ("floor", "gateway")
    }
    assert set(rows) == {"floor", "gateway"}
    for row in rows.values():
        p50, p95, p99 = (float(v) for v in row[4:7])
        assert 0 < p50 <= p95 <= p99
        assert float(row[7]) >= 0.9  # the share of reports that reached the subscribers
        assert row[8] == "0"  # no subscriber closed


def test_the_stream_bench_refuses_bad_rates(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["stream", "--rates", "0"])
    assert exit_.value.code == 2
    assert "rates must be positive" in capsys.readouterr().err
