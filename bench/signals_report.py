"""The signal benchmark's results: timings, verdicts against the targets, table and JSON."""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import verdict

# From the issue, on the 2-core machine.
MEDIAN_TARGET_MS = 2.0  # small panel, production pipeline
RATIO_TARGET = 50.0  # reference median over production median
LARGE_TARGET_S = 3.0  # large panel, one pipeline call
PEAK_TARGET = 3.0  # large panel: peak memory beyond the input, in input sizes

Shape = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Call:
    """One timed call."""

    seconds: float
    page_faults: int  # minor faults while it ran: fresh memory touched for the first time


@dataclass(frozen=True, slots=True)
class Timing:
    """One target's calls, each timed alone, in milliseconds."""

    name: str
    runs: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    page_faults_p50: float
    # Each call's time in the order they ran, for plots; left out of the JSON's summary.
    samples_ms: tuple[float, ...] = field(default=(), repr=False)

    @classmethod
    def of(cls, name: str, calls: list[Call]) -> Timing:
        if not calls:
            raise ValueError(f"{name}: nothing was timed")
        ms = np.asarray([c.seconds for c in calls]) * 1000.0
        p50, p95, p99 = (float(v) for v in np.percentile(ms, (50, 95, 99)))
        faults = float(np.median([c.page_faults for c in calls]))
        return cls(
            name,
            len(calls),
            p50,
            p95,
            p99,
            float(ms.min()),
            float(ms.max()),
            faults,
            tuple(float(v) for v in ms),
        )

    @property
    def median_ms(self) -> float:
        return self.p50_ms


@dataclass(frozen=True, slots=True)
class SmallResult:
    shape: Shape
    production: Timing
    reference: Timing
    symmetric: Timing
    sequential: Timing
    fresh_buffers: Timing  # production without reusing its scratch buffers
    max_abs_difference: float  # production vs reference, on the bench's panel

    @property
    def ratio(self) -> float:
        return self.reference.median_ms / self.production.median_ms

    @property
    def reuse_saving(self) -> float:
        return 1.0 - self.production.median_ms / self.fresh_buffers.median_ms


@dataclass(frozen=True, slots=True)
class LargeResult:
    shape: Shape
    input_bytes: int
    wall_s: list[float]
    fresh_buffers_s: list[float]  # the same calls without reusing scratch buffers
    traced_peak_bytes: int
    rss_peak_bytes: int | None  # None: the cross-check did not run (``rss_note`` says why)
    rss_note: str

    @property
    def median_s(self) -> float:
        return float(np.median(self.wall_s))

    @property
    def reuse_saving(self) -> float:
        return 1.0 - self.median_s / float(np.median(self.fresh_buffers_s))

    @property
    def peak_ratio(self) -> float:
        """The larger of the two peak measures, in input sizes."""
        peaks = [self.traced_peak_bytes, self.rss_peak_bytes or 0]
        return max(peaks) / self.input_bytes


@dataclass(slots=True)
class SignalBenchReport:
    settings: dict[str, Any]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float] | None = None
    small: SmallResult | None = None
    large: LargeResult | None = None
    notes: list[str] = field(default_factory=list)

    def verdicts(self) -> dict[str, bool | None]:
        """Each target met (True), missed (False) or not measured (None)."""
        small, large = self.small, self.large
        return {
            "median": None if small is None else small.production.median_ms <= MEDIAN_TARGET_MS,
            "ratio": None if small is None else small.ratio >= RATIO_TARGET,
            "large_wall": None if large is None else large.median_s <= LARGE_TARGET_S,
            "large_peak": None if large is None else large.peak_ratio < PEAK_TARGET,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": "signals",
            "at": datetime.now(UTC).isoformat(),
            "machine": {
                "cpus": os.cpu_count(),
                "python": sys.version.split()[0],
                "numpy": np.__version__,
                "platform": platform.platform(),
                "load_before": self.load_before,
                "load_after": self.load_after,
            },
            "settings": self.settings,
            "small": None if self.small is None else _without_samples(asdict(self.small)),
            "large": None if self.large is None else asdict(self.large),
            "verdicts": self.verdicts(),
        }

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")


def _without_samples(small: dict[str, Any]) -> dict[str, Any]:
    return {
        name: {k: v for k, v in value.items() if k != "samples_ms"}
        if isinstance(value, dict)
        else value
        for name, value in small.items()
    }


def format_table(report: SignalBenchReport) -> str:
    lines = []
    v = report.verdicts()
    if report.small is not None:
        small = report.small
        lines.append(f"small panel (T, N, K) = {small.shape}: ms per call; page faults (median)")
        lines.append(_row(("target", "runs", "median", "P95", "P99", "min", "max", "faults")))
        timings = (small.production, small.reference, small.symmetric, small.sequential)
        for t in (*timings, small.fresh_buffers):
            cells = (t.p50_ms, t.p95_ms, t.p99_ms, t.min_ms, t.max_ms)
            faults = f"{t.page_faults_p50:.0f}"
            lines.append(_row((t.name, str(t.runs), *(f"{c:.3f}" for c in cells), faults)))
        lines.append(
            f"reference/production (medians): {small.ratio:.1f}x ; "
            f"largest |production - reference| {small.max_abs_difference:.1e}"
        )
        lines.append(f"scratch buffer reuse saves {small.reuse_saving:.0%} (medians)")
        lines.append(
            f"production median <= {MEDIAN_TARGET_MS:g} ms: {verdict(v['median'])} ; "
            f"reference/production >= {RATIO_TARGET:g}x: {verdict(v['ratio'])}"
        )
    if report.large is not None:
        large = report.large
        gib = 2.0**30
        runs = ", ".join(f"{s:.2f}" for s in large.wall_s)
        lines.append("")
        lines.append(
            f"large panel (T, N, K) = {large.shape}, input {large.input_bytes / gib:.2f} GiB"
        )
        lines.append(f"wall s per call: {runs} ; median {large.median_s:.2f}")
        fresh = ", ".join(f"{s:.2f}" for s in large.fresh_buffers_s)
        lines.append(
            f"without scratch buffer reuse: {fresh} ; reuse saves {large.reuse_saving:.0%}"
        )
        rss = "n/a" if large.rss_peak_bytes is None else f"{large.rss_peak_bytes / gib:.3f} GiB"
        lines.append(
            f"peak beyond the input: tracemalloc {large.traced_peak_bytes / gib:.3f} GiB ; "
            f"child RSS {rss} ({large.rss_note})"
        )
        lines.append(
            f"median <= {LARGE_TARGET_S:g} s: {verdict(v['large_wall'])} ; "
            f"peak < {PEAK_TARGET:g}x input ({large.peak_ratio:.2f}x): "
            f"{verdict(v['large_peak'])}"
        )
    before, after = report.load_before, report.load_after
    lines.append("")
    lines.append(
        f"load average (1, 5, 15 min) before {_load(before)}, after {_load(after)} "
        f"on {os.cpu_count()} CPUs; BLAS threads: {report.settings.get('blas_threads')}"
    )
    return "\n".join(lines)


def _row(cells: tuple[str, ...]) -> str:
    return cells[0].ljust(12) + "".join(cell.rjust(10) for cell in cells[1:])


def _load(load: tuple[float, float, float] | None) -> str:
    return "n/a" if load is None else " ".join(f"{x:.2f}" for x in load)
