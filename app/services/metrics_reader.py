"""The gateway's metrics as every process of it has them: read for ``GET /metrics`` and for
the rolling summary.

Under ``ordergate serve`` every process (the HTTP workers, the applier, the worker) writes
its metrics into one directory (prometheus_client's multiprocess mode); any worker reads
them all from there, so each scrape, and each summary, sees the whole gateway whichever
worker answers it. An app run in one process (tests, ``create_app``) reads its own registry.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from app.domain.histograms import BucketCounts

LabelKey = tuple[str, ...]  # the values of a series' labels, in name order


def collect(multiprocess_dir: Path | None) -> list[Metric]:
    """Every metric family, added up over the gateway's processes."""
    if multiprocess_dir is None:
        return list(REGISTRY.collect())
    registry = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(registry, path=str(multiprocess_dir))  # type: ignore[no-untyped-call]
    return list(registry.collect())


_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w*_(\d+)\.db")


def forget_dead_processes(multiprocess_dir: Path) -> list[int]:
    """Drop the live gauges (orders in flight, stream subscribers) of processes that are
    gone: a worker killed mid-request would otherwise count its last values for ever
    (uvicorn starts another in its place). Counters and histograms stay: what a dead
    process counted still happened. The pids dropped."""
    dead: set[int] = set()
    for name in os.listdir(multiprocess_dir):
        match = _LIVE_GAUGE_FILE.fullmatch(name)
        if match is not None and not _alive(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in dead:
        with contextlib.suppress(FileNotFoundError):  # another worker got there first
            mark_process_dead(pid, str(multiprocess_dir))  # type: ignore[no-untyped-call]
    return sorted(dead)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Families:
    """Metric families as a collector, for ``generate_latest``."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


@dataclass(slots=True)
class Readings:
    """The histograms and counters the summary uses, by family name and label values."""

    histograms: dict[str, dict[LabelKey, BucketCounts]] = field(default_factory=dict)
    counters: dict[str, dict[LabelKey, float]] = field(default_factory=dict)

    def histogram(self, name: str, labels: LabelKey = ()) -> BucketCounts | None:
        return self.histograms.get(name, {}).get(labels)

    def counter(self, name: str) -> dict[LabelKey, float]:
        return self.counters.get(name, {})


def readings(families: Iterable[Metric], names: frozenset[str]) -> Readings:
    """The ``names`` families' histograms and counters (family names, no _total)."""
    result = Readings()
    for family in families:
        if family.name not in names:
            continue
        if family.type == "histogram":
            result.histograms[family.name] = _histograms(family)
        elif family.type == "counter":
            result.counters[family.name] = {
                _label_key(s.labels): s.value for s in family.samples if s.name.endswith("_total")
            }
    return result


def _histograms(family: Metric) -> dict[LabelKey, BucketCounts]:
    buckets: dict[LabelKey, list[tuple[float, float]]] = {}
    totals: dict[LabelKey, float] = {}
    for sample in family.samples:
        if sample.name.endswith("_bucket"):
            labels = {k: v for k, v in sample.labels.items() if k != "le"}
            bound = math.inf if sample.labels["le"] == "+Inf" else float(sample.labels["le"])
            buckets.setdefault(_label_key(labels), []).append((bound, sample.value))
        elif sample.name.endswith("_sum"):
            totals[_label_key(sample.labels)] = sample.value
    histograms: dict[LabelKey, BucketCounts] = {}
    for key, pairs in buckets.items():
        pairs.sort()
        histograms[key] = BucketCounts(
            tuple(b for b, _ in pairs), tuple(c for _, c in pairs), totals.get(key, 0.0)
        )
    return histograms


def _label_key(labels: dict[str, str]) -> LabelKey:
    return tuple(labels[name] for name in sorted(labels))
