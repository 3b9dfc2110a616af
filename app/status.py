"""``ordergate status``: the gateway's rolling summary (``GET /v1/metrics/summary``) as a
table in the terminal."""

from __future__ import annotations

from typing import Any

import httpx

STAGES_IN_ORDER = ("auth", "risk", "breaker", "pacing", "broker", "persist", "publish")


class StatusUnavailable(Exception):
    """The gateway could not be asked, or refused: the message says which."""


def fetch_summary(url: str, key: str, timeout_s: float = 5.0) -> dict[str, Any]:
    try:
        response = httpx.get(
            f"{url.rstrip('/')}/v1/metrics/summary",
            headers={"Authorization": f"Bearer {key}"},
            timeout=timeout_s,
        )
    except httpx.HTTPError as exc:
        raise StatusUnavailable(f"{url} did not answer: {exc}") from exc
    if response.status_code != 200:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise StatusUnavailable(f"{url} answered {response.status_code}: {detail}")
    summary: dict[str, Any] = response.json()
    return summary


def render(summary: dict[str, Any], url: str) -> str:
    """The summary as a table (fixed-width, for a terminal)."""
    compliance = summary["sla_compliance"]
    lines = [
        f"ordergate at {url}: the last {summary['covered_s']:.0f} s "
        f"(window {summary['window_s']:.0f} s)",
        "",
        f"SLA         target {summary['sla_target_ms']:g} ms, "
        + (
            "no order yet"
            if compliance is None
            else f"{compliance:.4%} within ({summary['within_sla']:,} within, "
            f"{summary['over_sla']:,} over)"
        ),
        f"throughput  {summary['orders_per_s']:.1f} orders/s, "
        f"{summary['reports_per_s']:.1f} reports/s, {summary['errors_per_s']:.2f} errors/s",
        "",
        f"{'stage':<12}{'count':>10}{'P50 ms':>10}{'P95 ms':>10}{'P99 ms':>10}",
    ]
    stages = summary["stages"]
    rows = [(name, stages[name]) for name in STAGES_IN_ORDER if name in stages]
    rows.append(("end to end", summary["end_to_end"]))
    for name, stage in rows:
        lines.append(
            f"{name:<12}{stage['count']:>10,}"
            + "".join(f"{_ms(stage[p]):>10}" for p in ("p50_ms", "p95_ms", "p99_ms"))
        )
    outcomes = ", ".join(f"{k} {v:,}" for k, v in summary["outcomes"].items() if v)
    lines += ["", f"orders      {outcomes or 'none'}"]
    errors = sorted(summary["errors"].items(), key=lambda kv: -kv[1])
    lines.append(
        "errors      " + (", ".join(f"{code} {n:,}" for code, n in errors) if errors else "none")
    )
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
