"""The suite's PNGs: each stage's latency over time and its percentile curve (the stage and
its floor on one axis), and the scaling run's P95 and memory against resting orders."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from bench.scaling import ScalingPoint

# Percentiles drawn on the curves: 0 to 99.99, spaced evenly in "number of nines".
_NINES = np.linspace(0.0, 4.0, 161)
_TICKS = {0.0: "0", math.log10(2): "50", 1.0: "90", 2.0: "99", 3.0: "99.9", 4.0: "99.99"}


@dataclass(frozen=True, slots=True)
class Series:
    """One target's samples in one stage: when each was taken (seconds from the measured
    phase's start, on ``clock``) and its latency in milliseconds."""

    name: str
    at_s: list[float]
    latency_ms: list[float]


@dataclass(frozen=True, slots=True)
class StagePlot:
    title: str
    series: Sequence[Series]
    clock: str = "s since the measured phase began"


def latency_over_time(stages: Sequence[StagePlot], path: Path) -> Path:
    """One panel a stage: every sample as a dot, the stage's targets in their colours."""
    fig, axes = _grid(len(stages))
    for ax, stage in zip(axes, stages, strict=False):
        for series in stage.series:
            ax.scatter(series.at_s, series.latency_ms, s=2, alpha=0.4, label=series.name)
        _log_y(ax, stage)
        ax.set_xlabel(stage.clock, fontsize=7)
        ax.set_ylabel("latency, ms", fontsize=7)
        ax.legend(fontsize=7, markerscale=4, loc="upper right")
    return _save(fig, axes, len(stages), path, "latency over time")


def percentile_curves(stages: Sequence[StagePlot], path: Path) -> Path:
    """One panel a stage: latency at each percentile, the tail stretched out to the right."""
    fig, axes = _grid(len(stages))
    for ax, stage in zip(axes, stages, strict=False):
        for series in stage.series:
            if not series.latency_ms:
                continue
            most = math.log10(max(len(series.latency_ms), 2))  # no nines beyond the data
            nines = _NINES[most >= _NINES]
            values = np.percentile(series.latency_ms, 100 * (1 - 10.0 ** (-nines)))
            ax.plot(nines, values, label=series.name)
        _log_y(ax, stage)
        ax.set_xticks(list(_TICKS), list(_TICKS.values()), fontsize=7)
        ax.set_xlabel("percentile", fontsize=7)
        ax.set_ylabel("latency, ms", fontsize=7)
        ax.legend(fontsize=7, loc="upper left")
    return _save(fig, axes, len(stages), path, "latency percentiles")


def scaling_plot(points: Sequence[ScalingPoint], path: Path) -> Path:
    """P95, the gateway's RSS and Redis's memory against resting orders, a line a level."""
    fig, (p95_ax, rss_ax, redis_ax) = plt.subplots(1, 3, figsize=(15, 4.5))
    for accounts in dict.fromkeys(p.accounts for p in points):
        level = [p for p in points if p.accounts == accounts and not p.subscribers]
        resting = [p.resting for p in level]
        line = p95_ax.plot(resting, [p.p95_ms for p in level], "o-", label=f"{accounts} acct")
        colour = line[0].get_color()
        for p in points:
            if p.accounts == accounts and p.subscribers:
                p95_ax.plot([p.resting], [p.p95_ms], "s", color=colour, markersize=9,
                            label=f"{accounts} acct + {p.subscribers} subscribers")  # fmt: skip
        measured = [p for p in level if p.gateway_rss_mb is not None]
        rss_ax.plot([p.resting for p in measured], [p.gateway_rss_mb for p in measured], "o-",
                    color=colour, label=f"{accounts} acct")  # fmt: skip
        redis_ax.plot([p.resting for p in measured], [p.redis_mb for p in measured], "o-",
                      color=colour, label=f"{accounts} acct")  # fmt: skip
    panels = (
        (p95_ax, "P95 at the rate, ms", "order path P95"),
        (rss_ax, "MB", "gateway RSS (workers, applier, worker)"),
        (redis_ax, "MB", "Redis used_memory"),
    )
    for ax, ylabel, title in panels:
        ax.set_xscale("symlog", linthresh=1000)
        ax.set_xlabel("resting orders")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _grid(count: int) -> tuple[Figure, list[Axes]]:
    columns = 2
    rows = max(1, math.ceil(count / columns))
    fig, grid = plt.subplots(rows, columns, figsize=(12, 3.2 * rows), squeeze=False)
    return fig, [ax for row in grid for ax in row]


def _log_y(ax: Axes, stage: StagePlot) -> None:
    ax.set_title(stage.title, fontsize=9)
    if any(v > 0 for s in stage.series for v in s.latency_ms):
        ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.tick_params(labelsize=7)


def _save(fig: Figure, axes: list[Axes], used: int, path: Path, title: str) -> Path:
    for ax in axes[used:]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
