"""``python -m bench suite`` at tiny sizes: every stage asked for has its row, a PostgreSQL
server that cannot be reached is a SKIP that says why, and the JSON, the summary and the PNGs
are written. The scaling run goes through its points on a real gateway. Never timed. The
other stages' benches have smoke tests of their own; this keeps the orchestration working."""

from __future__ import annotations

import json
from pathlib import Path

from bench.scaling import ScalingOptions
from bench.suite import Clock, SuiteOptions, run_suite, write_results
from bench.suite_report import format_table

PNG = b"\x89PNG\r\n\x1a\n"


def test_the_suite_runs_each_stage_and_writes_json_summary_and_plots(tmp_path: Path) -> None:
    options = SuiteOptions(
        stages=("orders-postgresql", "guard", "signals", "metrics", "scaling"),
        out=tmp_path,
        postgres_url="postgresql://postgres@127.0.0.1:9/postgres",  # nothing listens there
        rate=200.0,
        warmup_s=0.2,
        inprocess_s=0.5,
        signal_runs=10,
        reference_runs=2,
        metrics_batches=3,
        scaling=ScalingOptions(
            rate=100.0, seconds=0.5, warmup_s=0.3, accounts=(3,), resting=(0, 30), subscribers=2
        ),
    )

    report = run_suite(options, Clock())
    written = write_results(report, tmp_path, "pytest")

    stages = [row.stage for row in report.rows]
    assert stages[0] == "orders-postgresql"
    assert [s.split()[0] for s in stages[1:]] == [
        "breaker",
        "signals",
        "instrumentation",
        "scaling",
    ]
    skipped = report.rows[0]
    assert skipped.verdict == "SKIP"
    assert "not reachable" in skipped.note
    for row in report.rows[1:]:
        assert row.verdict in ("PASS", "FAIL")
        assert not row.note.startswith("did not run"), row.note
        assert row.p95_ms is not None
        assert row.p95_ms > 0
    table = format_table(report)
    for stage in stages:
        assert stage in table
    assert "resting" in table  # the scaling table follows

    assert {p.name for p in written} == {
        "results.json", "summary.md", "latency_over_time.png", "percentiles.png", "scaling.png",
    }  # fmt: skip
    for name in ("latency_over_time.png", "percentiles.png", "scaling.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG)
    document = json.loads((tmp_path / "results.json").read_text())
    assert [s["stage"] for s in document["stages"]] == stages
    machine = document["machine"]
    for key in ("cpu_model", "cores", "load_before", "load_after", "python", "git_commit"):
        assert machine[key], key
    guard = document["stages"][1]["samples"]["guard"]
    assert len(guard["latency_ms"]) == len(guard["at_s"]) == 100  # 200/s for 0.5 s
    points = document["scaling"]
    assert [(p["accounts"], p["resting"], p["subscribers"]) for p in points] == [
        (3, 0, 0),
        (3, 30, 0),
        (3, 30, 2),
    ]
    assert all(p["redis_mb"] > 0 and p["gateway_rss_mb"] > 0 for p in points)
    assert "| stage |" in (tmp_path / "summary.md").read_text()
