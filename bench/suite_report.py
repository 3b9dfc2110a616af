"""The suite's results: a row a stage against its target, the printed table, the Markdown
summary for docs/performance.md, the machine it ran on, and the JSON."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.plots import Series
from bench.scaling import ScalingOptions, ScalingPoint
from bench.scaling import format_table as scaling_table

REPO = Path(__file__).resolve().parents[1]
PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


@dataclass(slots=True)
class StageResult:
    """One row of the table. ``ratio``: the stage's P95 over its floor's (throughput rows:
    the stage's maximum throughput over its floor's)."""

    stage: str
    target: str
    verdict: str
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    floor_p95_ms: float | None = None
    ratio: float | None = None
    note: str = ""
    elapsed_s: float = 0.0
    series: list[Series] = field(default_factory=list)
    clock: str = "s since the measured phase began"
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "target": self.target,
            "verdict": self.verdict,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "floor_p95_ms": self.floor_p95_ms,
            "ratio": self.ratio,
            "note": self.note,
            "elapsed_s": round(self.elapsed_s, 2),
            "details": self.details,
            "samples": {
                s.name: {
                    "at_s": [round(t, 4) for t in s.at_s],
                    "latency_ms": [round(v, 4) for v in s.latency_ms],
                }
                for s in self.series
            },
        }


def verdict(*met: bool | None) -> str:
    """PASS only if every target was measured and met."""
    return PASS if met and all(m is True for m in met) else FAIL


@dataclass(slots=True)
class SuiteReport:
    settings: dict[str, Any]
    machine: dict[str, Any]
    rows: list[StageResult] = field(default_factory=list)
    scaling: list[ScalingPoint] = field(default_factory=list)
    scaling_options: ScalingOptions | None = None
    wall_s: float = 0.0

    @property
    def failed(self) -> bool:
        return any(row.verdict == FAIL for row in self.rows)

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": "suite",
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "wall_s": round(self.wall_s, 1),
            "machine": self.machine,
            "settings": self.settings,
            "stages": [row.to_json() for row in self.rows],
            "scaling": [point.summary() for point in self.scaling],
            "failed": self.failed,
        }

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")


_HEADER = ("stage", "P50 ms", "P95 ms", "P99 ms", "target", "floor P95", "ratio", "verdict")


def format_table(report: SuiteReport) -> str:
    rows = [_cells(row) for row in report.rows]
    widths = [max(len(c[i]) for c in [_HEADER, *rows]) for i in range(len(_HEADER))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(_HEADER, widths, strict=True))]
    for row, cells in zip(report.rows, rows, strict=True):
        line = "  ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True))
        lines.append(f"{line}  {row.note}".rstrip())
    lines.append(
        "ratio: the stage's P95 over its floor's, measured in the same run (throughput rows: "
        "the stage's best closed loop over its floor's)"
    )
    if report.scaling and report.scaling_options is not None:
        lines += ["", scaling_table(report.scaling, report.scaling_options)]
    return "\n".join(lines)


def format_markdown(report: SuiteReport, command: str) -> str:
    """The summary docs/performance.md quotes: the machine, the command, both tables."""
    m = report.machine
    load = " / ".join(f"{x:.2f}" for x in m["load_before"])
    lines = [
        f"`{command}` on `{m['git_commit'][:7]}`{' (with local changes)' if m['dirty'] else ''},"
        f" {m['finished_at']}: {m['cpu_model']}, {m['cores']} cores, Python {m['python']}, "
        f"load average before {load}; {report.wall_s:.0f} s wall.",
        "",
        "| stage | P50 ms | P95 ms | P99 ms | target | floor P95 ms | ratio | verdict | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report.rows:
        cells = _cells(row)
        lines.append("| " + " | ".join((*cells, row.note.replace("|", "/"))) + " |")
    if report.scaling:
        lines += [
            "",
            "| point | resting | accounts | subscribers | P50 ms | P95 ms | P95 vs empty "
            "| vs level's empty | gateway RSS MB | Redis MB | verdict | note |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for p in report.scaling:
            ratios = " | ".join(
                "-" if r is None else f"{r:.2f}" for r in (p.p95_vs_empty, p.p95_vs_level)
            )
            rss = "-" if p.gateway_rss_mb is None else f"{p.gateway_rss_mb:.1f}"
            lines.append(
                f"| {p.name} | {p.resting:,} | {p.accounts:,} | {p.subscribers} | {_ms(p.p50_ms)}"
                f" | {_ms(p.p95_ms)} | {ratios} | {rss} | {p.redis_mb:.1f} | "
                f"{PASS if p.passed else FAIL} | {p.note} |"
            )
    return "\n".join(lines) + "\n"


def _cells(row: StageResult) -> tuple[str, ...]:
    ratio = "-" if row.ratio is None else f"{row.ratio:.2f}"
    return (
        row.stage,
        _ms(row.p50_ms),
        _ms(row.p95_ms),
        _ms(row.p99_ms),
        row.target,
        _ms(row.floor_p95_ms),
        ratio,
        row.verdict,
    )


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "load_before": list(os.getloadavg()),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git_commit": _git("rev-parse", "HEAD") or "unknown",
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""
