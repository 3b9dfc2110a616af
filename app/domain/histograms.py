"""Percentiles read off cumulative histogram buckets, as Prometheus's ``histogram_quantile``
reads them: the bucket the rank falls in, linearly interpolated within it. A percentile is
therefore only as exact as the buckets around it (``app.services.metrics.STAGE_BUCKETS_S``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BucketCounts:
    """One histogram: ``cumulative[i]`` observations at most ``bounds[i]``; the last bound
    is +Inf, so its count is every observation."""

    bounds: tuple[float, ...]
    cumulative: tuple[float, ...]
    total: float  # the sum of the observed values

    @property
    def count(self) -> float:
        return self.cumulative[-1] if self.cumulative else 0.0

    def minus(self, earlier: BucketCounts | None) -> BucketCounts:
        """What was observed since ``earlier`` (of the same histogram; None: since start).
        A counter that went backwards (its process restarted) counts from zero."""
        if earlier is None or earlier.bounds != self.bounds or earlier.count > self.count:
            return self
        return BucketCounts(
            self.bounds,
            tuple(
                max(0.0, a - b) for a, b in zip(self.cumulative, earlier.cumulative, strict=True)
            ),
            max(0.0, self.total - earlier.total),
        )

    def plus(self, other: BucketCounts) -> BucketCounts:
        if other.bounds != self.bounds:
            raise ValueError("histograms with different buckets")
        return BucketCounts(
            self.bounds,
            tuple(a + b for a, b in zip(self.cumulative, other.cumulative, strict=True)),
            self.total + other.total,
        )


def quantile(q: float, histogram: BucketCounts) -> float | None:
    """The ``q`` quantile (0..1) of ``histogram``; None when it holds no observation. A rank
    in the +Inf bucket answers the highest finite bound (as histogram_quantile does)."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} is not within 0..1")
    count = histogram.count
    if count <= 0:
        return None
    rank = q * count
    lower_bound, lower_count = 0.0, 0.0
    for bound, cumulative in zip(histogram.bounds, histogram.cumulative, strict=True):
        if cumulative >= rank:
            if math.isinf(bound):
                return lower_bound
            in_bucket = cumulative - lower_count
            if in_bucket <= 0:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / in_bucket
        lower_bound, lower_count = bound, cumulative
    return lower_bound
