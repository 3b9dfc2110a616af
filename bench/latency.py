"""Latency samples summed up: the percentiles every benchmark table prints."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Percentiles:
    name: str
    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


def percentiles(name: str, samples_ms: list[float]) -> Percentiles:
    """NaN throughout when there is no sample."""
    array = np.array(samples_ms or [float("nan")])
    p50, p95, p99 = np.percentile(array, [50, 95, 99])
    return Percentiles(
        name, len(samples_ms), float(p50), float(p95), float(p99), float(array.max())
    )
