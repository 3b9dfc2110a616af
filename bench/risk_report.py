"""The risk benchmark's results: phases, ratios, verdicts and the printed table."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from bench.arrivals import Recorder
from bench.openloop import percentiles_ms
from bench.report import padded_line, verdict

# From the issue: the decision alone, on the 2-core machine.
P95_TARGET_MS = 0.5
P99_TARGET_MS = 1.0
SUSTAIN_SHARE = 0.99
ACCEPTED, HELD, FLOOR_OK = "accepted", "held", "ok"  # outcome names
_RAW_SAMPLES = frozenset({"latencies_s", "due_s"})


# -- results -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RiskPhase:
    """One target in one mode. Latencies (ms) are of every completed call, rejects included:
    a rejection is a decision too. ``errors``: calls that decided nothing (Redis failed)."""

    target: str  # "floor" or "decision"
    mode: str
    offered_per_s: float | None
    started: int
    completed: int
    outcomes: dict[str, int]
    errors: dict[str, int]
    achieved_per_s: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    # From the call's actual start, not its intended one: the call alone, without the time
    # it waited for the loop (the start lag).
    service_p50_ms: float | None
    service_p95_ms: float | None
    service_p99_ms: float | None
    send_lag_p50_ms: float | None
    send_lag_p99_ms: float | None
    # The raw samples, for plots: each call's latency (seconds) and when it was due, in
    # seconds from the phase's first call.
    latencies_s: list[float] = field(default_factory=list, repr=False)
    due_s: list[float] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        """The phase's fields for a JSON report, without the raw samples."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _RAW_SAMPLES}

    @property
    def accepted(self) -> int:
        return self.outcomes.get(ACCEPTED, 0)

    @property
    def rejected(self) -> dict[str, int]:
        return {k: v for k, v in self.outcomes.items() if k not in (ACCEPTED, HELD, FLOOR_OK)}

    @classmethod
    def summarize(cls, target: str, mode: str, offered: float | None, rec: Recorder) -> RiskPhase:
        lat = percentiles_ms(rec.latencies, (50, 95, 99, 100))
        service = percentiles_ms(rec.service, (50, 95, 99))
        lag = percentiles_ms(rec.send_lags, (50, 99))
        return cls(
            target=target,
            mode=mode,
            offered_per_s=offered,
            started=rec.started,
            completed=len(rec.latencies),
            outcomes=dict(rec.outcomes),
            errors=dict(rec.errors),
            achieved_per_s=len(rec.latencies) / rec.window_s if rec.window_s > 0 else 0.0,
            p50_ms=lat[0],
            p95_ms=lat[1],
            p99_ms=lat[2],
            max_ms=lat[3],
            service_p50_ms=service[0],
            service_p95_ms=service[1],
            service_p99_ms=service[2],
            send_lag_p50_ms=lag[0],
            send_lag_p99_ms=lag[1],
            latencies_s=list(rec.latencies),
            due_s=[t - min(rec.due) for t in rec.due] if rec.due else [],
        )


@dataclass(slots=True)
class RiskBenchReport:
    settings: dict[str, Any]
    phases: list[RiskPhase] = field(default_factory=list)

    def find(self, target: str, closed: bool) -> RiskPhase | None:
        for phase in self.phases:
            if phase.target == target and (phase.offered_per_s is None) == closed:
                return phase
        return None

    def latency_ratio(self, attr: str) -> float | None:
        """Decision over floor at one percentile (``p50_ms`` ...), open loop, this run."""
        decision, floor = self.find("decision", False), self.find("floor", False)
        if decision is None or floor is None:
            return None
        d, f = getattr(decision, attr), getattr(floor, attr)
        return None if d is None or not f else float(d / f)

    @property
    def throughput_ratio(self) -> float | None:
        decision, floor = self.find("decision", True), self.find("floor", True)
        if decision is None or floor is None or floor.achieved_per_s <= 0:
            return None
        return decision.achieved_per_s / floor.achieved_per_s

    def verdicts(self) -> dict[str, bool | None]:
        d = self.find("decision", False)
        if d is None:
            return {"sustained": None, "p95": None, "p99": None}
        offered = d.offered_per_s or 0.0
        return {
            "sustained": not d.errors
            and d.completed == d.started
            and d.achieved_per_s >= SUSTAIN_SHARE * offered,
            "p95": d.p95_ms is not None and d.p95_ms <= P95_TARGET_MS,
            "p99": d.p99_ms is not None and d.p99_ms <= P99_TARGET_MS,
        }


_HEADER = ("target", "mode", "offered/s", "achieved/s", "calls", "p50_ms", "p95_ms", "p99_ms")
_WIDTHS = (10, 13, 10, 11, 8, 8, 8, 8, 8, 0)


def format_table(report: RiskBenchReport) -> str:
    """One line per phase, then the decision/floor ratios and the target verdicts."""
    lines = [_line((*_HEADER, "max_ms", "outcomes"))]
    for p in report.phases:
        offered = "-" if p.offered_per_s is None else f"{p.offered_per_s:g}"
        cells = (p.target, p.mode, offered, f"{p.achieved_per_s:.1f}", str(p.completed))
        ms = tuple(_ms(v) for v in (p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms))
        lines.append(_line((*cells, *ms, _outcomes(p))))
    lines.append("")
    ratios = "  ".join(
        f"{name} {_ratio(report.latency_ratio(attr))}"
        for name, attr in (("P50", "p50_ms"), ("P95", "p95_ms"), ("P99", "p99_ms"))
    )
    lines.append(f"decision/floor latency ratio (open loop): {ratios}")
    lines.append(f"decision/floor max throughput ratio: {_ratio(report.throughput_ratio)}")
    v = report.verdicts()
    rate = report.settings.get("rate", 0.0)
    lines.append(
        f"decision at {rate:g}/s: sustained {verdict(v['sustained'])} ; "
        f"P95 target <= {P95_TARGET_MS:g} ms: {verdict(v['p95'])} ; "
        f"P99 target <= {P99_TARGET_MS:g} ms: {verdict(v['p99'])}"
    )
    for p in report.phases:
        rejected = p.rejected
        if rejected:
            detail = ", ".join(f"{code} {n}" for code, n in sorted(rejected.items()))
            lines.append(f"rejected by {p.target} ({p.mode}): {detail}")
    # Latency counts from the intended start, so a late start (the loop busy, the process
    # descheduled) is inside it. Shown apart, with the calls timed from their actual start.
    for p in report.phases:
        if p.offered_per_s is not None:
            lines.append(
                f"{p.target} ({p.mode}): start lag p50 {_ms(p.send_lag_p50_ms)} "
                f"p99 {_ms(p.send_lag_p99_ms)} ms; from the actual start "
                f"p50 {_ms(p.service_p50_ms)} p95 {_ms(p.service_p95_ms)} "
                f"p99 {_ms(p.service_p99_ms)} ms"
            )
    return "\n".join(lines)


def _line(cells: tuple[str, ...]) -> str:
    return padded_line(cells, _WIDTHS)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _outcomes(p: RiskPhase) -> str:
    if p.target == "floor":
        text = f"ok {p.outcomes.get(FLOOR_OK, 0)}"
    else:
        text = f"accepted {p.accepted}, rejected {sum(p.rejected.values())}"
        if p.outcomes.get(HELD):
            text += f", held {p.outcomes[HELD]}"
    if p.errors:
        text += ", errors " + " ".join(f"{k}:{n}" for k, n in sorted(p.errors.items()))
    return text
