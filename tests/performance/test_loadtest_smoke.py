"""``make loadtest`` at a tiny size: Locust runs headless against a gateway the runner
starts, every user kind sends, the verdict is the exit code, the results are written.
Never timed beyond the SLA check Locust itself makes."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_the_load_test_runs_traders_and_subscribers_and_writes_its_results(
    tmp_path: Path,
) -> None:
    out = tmp_path / "results"
    run = subprocess.run(
        [sys.executable, "-m", "loadtests.run", "--rate", "20", "--duration", "4",
         "--traders", "2", "--subscribers", "1", "--accounts", "2", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with (out / "locust_stats.csv").open() as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    assert int(rows["POST /v1/orders"]["Request Count"]) >= 20
    assert rows["POST /v1/orders"]["Failure Count"] == "0"
    assert int(rows["POST /v1/orders from intended send"]["Request Count"]) > 0
    assert int(rows["fill"]["Request Count"]) > 0  # fills timed on the stream
    assert (out / "report.html").stat().st_size > 0
    assert (out / "latency.png").read_bytes()[:4] == b"\x89PNG"


def test_the_load_test_against_a_host_wants_keys() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "loadtests.run", "--host", "http://127.0.0.1:9"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert run.returncode == 2
    assert "ORDERGATE_LOADTEST_KEYS" in run.stderr
