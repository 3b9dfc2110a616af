"""The order benchmark's results: the printed table, the verdicts against targets, the JSON."""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.openloop import PhaseResult

# From the issue: 2 cores, simulated broker at zero latency, one worker, 500 orders/s.
P95_TARGET_MS = 5.0
P99_TARGET_MS = 10.0
RATIO_TARGET = 0.60
# "Sustains" the rate: nearly all of it answered 2xx within the phase.
SUSTAIN_SHARE = 0.99


@dataclass(frozen=True, slots=True)
class Row:
    target: str  # "floor" or "gateway"
    result: PhaseResult
    # CPU the phase cost per 2xx answer, in microseconds: the target's processes (the
    # gateway's include its applier) and the shared redis-server. None where not measurable.
    server_cpu_us: float | None = None
    redis_cpu_us: float | None = None


@dataclass(slots=True)
class BenchReport:
    settings: dict[str, Any]
    rows: list[Row] = field(default_factory=list)

    def find(self, target: str, closed: bool) -> PhaseResult | None:
        """The target's open-loop phase; or its closed loop of highest throughput (its
        maximum throughput, when closed loops ran at several concurrencies)."""
        phases = [
            row.result
            for row in self.rows
            if row.target == target and (row.result.offered_per_s is None) == closed
        ]
        return max(phases, key=lambda p: p.achieved_per_s) if phases else None

    @property
    def ratio(self) -> float | None:
        """Gateway max throughput over the floor's, both measured in this run."""
        gateway, floor = self.find("gateway", True), self.find("floor", True)
        if gateway is None or floor is None or floor.achieved_per_s <= 0:
            return None
        return gateway.achieved_per_s / floor.achieved_per_s

    def verdicts(self) -> dict[str, bool | None]:
        """Each target met (True), missed (False) or not measured (None)."""
        gw = self.find("gateway", False)
        ratio = self.ratio
        if gw is None:
            return {"sustained": None, "p95": None, "p99": None, "ratio": _ge(ratio)}
        offered = gw.offered_per_s or 0.0
        return {
            # Kept up: every request answered AND at the offered pace (not drained later).
            "sustained": gw.error_count == 0
            and gw.ok >= SUSTAIN_SHARE * offered * gw.duration_s
            and gw.achieved_per_s >= SUSTAIN_SHARE * offered,
            "p95": gw.p95_ms is not None and gw.p95_ms <= P95_TARGET_MS,
            "p99": gw.p99_ms is not None and gw.p99_ms <= P99_TARGET_MS,
            "ratio": _ge(ratio),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": "orders",
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {
                "cpus": os.cpu_count(),
                "python": sys.version.split()[0],
                "platform": platform.platform(),
            },
            "settings": self.settings,
            "phases": [
                {
                    "target": row.target,
                    **row.result.summary(),
                    "server_cpu_us_per_request": row.server_cpu_us,
                    "redis_cpu_us_per_request": row.redis_cpu_us,
                }
                for row in self.rows
            ],
            "max_throughput_ratio": self.ratio,
            "targets": {
                "p95_ms": P95_TARGET_MS,
                "p99_ms": P99_TARGET_MS,
                "ratio": RATIO_TARGET,
                "met": self.verdicts(),
            },
        }

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")


def _ge(ratio: float | None) -> bool | None:
    return None if ratio is None else ratio >= RATIO_TARGET


_HEADER = (
    "target",
    "mode",
    "offered/s",
    "achieved/s",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "cpu_us",
    "redis_us",
    "errors",
)
_WIDTHS = (9, 13, 10, 11, 7, 7, 7, 8, 7, 9, 0)


def format_table(report: BenchReport) -> str:
    """The human summary: one line per phase, then the ratio and the target verdicts."""
    lines = [_line(_HEADER)]
    for row in report.rows:
        r = row.result
        offered = "-" if r.offered_per_s is None else f"{r.offered_per_s:g}"
        lines.append(
            _line(
                (
                    row.target,
                    r.mode,
                    offered,
                    f"{r.achieved_per_s:.1f}",
                    _ms(r.p50_ms),
                    _ms(r.p95_ms),
                    _ms(r.p99_ms),
                    _ms(r.max_ms),
                    _us(row.server_cpu_us),
                    _us(row.redis_cpu_us),
                    _errors(r),
                )
            )
        )
    lines.append("")
    ratio = report.ratio
    ratio_text = "n/a" if ratio is None else f"{ratio:.2f}"
    verdicts = report.verdicts()
    best = [(t, report.find(t, True)) for t in ("floor", "gateway")]
    if all(phase is not None for _, phase in best):
        lines.append(
            "max throughput (best closed loop): "
            + ", ".join(f"{t} {p.achieved_per_s:.1f}/s ({p.mode})" for t, p in best if p)
        )
    lines.append(
        f"gateway/floor max throughput ratio: {ratio_text}  (target >= {RATIO_TARGET:.2f}): "
        f"{verdict(verdicts['ratio'])}"
    )
    rate = report.settings.get("rate")
    lines.append(
        f"gateway at {rate:g}/s: sustained {verdict(verdicts['sustained'])} ; "
        f"P95 target <= {P95_TARGET_MS:g} ms: {verdict(verdicts['p95'])} ; "
        f"P99 target <= {P99_TARGET_MS:g} ms: {verdict(verdicts['p99'])}"
    )
    lines.append(
        "cpu_us / redis_us: CPU per 2xx answer of the target's processes (the gateway's include "
        "its applier) and of redis-server"
    )
    for row in report.rows:
        for status, body in sorted(row.result.error_samples.items()):
            sample = " ".join(body.split())[:160]
            lines.append(f"first {status} from {row.target} ({row.result.mode}): {sample}")
    if report.rows:
        lags = " / ".join(
            f"{row.target} {_ms(row.result.send_lag_p99_ms)}"
            for row in report.rows
            if row.result.offered_per_s is not None
        )
        cpu = max(row.result.client_cpu_share for row in report.rows)
        # Latency counts from the intended send, so the client's own lag is inside it; and a
        # client near a full core would cap the measured throughput. Show both.
        lines.append(
            f"load generator: open-loop send lag p99 {lags or '-'} ms; "
            f"peak cpu {cpu:.0%} of one core"
        )
    return "\n".join(lines)


def _line(cells: tuple[str, ...]) -> str:
    return padded_line(cells, _WIDTHS)


def padded_line(cells: tuple[str, ...], widths: tuple[int, ...]) -> str:
    """Table cells left-aligned in columns of ``widths`` (0: the last, unpadded)."""
    return "".join(
        cell.ljust(width) if width else cell for cell, width in zip(cells, widths, strict=True)
    )


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _errors(result: PhaseResult) -> str:
    if not result.errors:
        return "0"
    detail = " ".join(f"{k}:{v}" for k, v in sorted(result.errors.items()))
    return f"{result.error_count} ({detail})"


def verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("PASS" if met else "MISS")
