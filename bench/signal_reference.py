"""The reference for ``orthogonalize(..., "residual")``: per timestamp, per signal, a least
squares fit with an intercept on the other K - 1 signals over the assets valid at that
timestamp (``np.linalg.lstsq``), keeping the residual.

It is the slow, obvious definition the vectorised path must match (to 1e-9 on z-scored
inputs), and the floor ``python -m bench signals`` times it against. Its NaN rules are the
production function's, decided here from the fits themselves: fewer than K + 1 valid
assets, a signal constant with respect to the intercept, or a variance inflation factor
||x_k - mean||^2 / ||residual_k||^2 above ``COLLINEAR_VIF`` make the whole timestamp NaN.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from app.domain.signal_math import COLLINEAR_VIF, FloatArray, composite, zscore


def residual_reference(panel: ArrayLike) -> FloatArray:
    """Leave-one-out residuals with intercept, one ``lstsq`` per timestamp and signal."""
    x = np.asarray(panel, dtype=np.float64)
    timestamps, _, signals = x.shape
    out = np.full(x.shape, np.nan)
    for t in range(timestamps):
        rows = np.isfinite(x[t]).all(axis=1)
        block = x[t][rows]
        count = block.shape[0]
        if count < signals + 1:
            continue
        spread_squared = ((block - block.mean(axis=0)) ** 2).sum(axis=0)
        level_squared = (block**2).sum(axis=0)
        if np.any(spread_squared * COLLINEAR_VIF <= level_squared):
            continue  # a signal constant with respect to the intercept
        residuals = np.empty_like(block)
        for k in range(signals):
            design = np.column_stack([np.ones(count), np.delete(block, k, axis=1)])
            coefficients, *_ = np.linalg.lstsq(design, block[:, k], rcond=None)
            residuals[:, k] = block[:, k] - design @ coefficients
        residual_squared = (residuals**2).sum(axis=0)
        if np.any(spread_squared > COLLINEAR_VIF * residual_squared):
            continue  # collinear: some signal's VIF exceeds the limit
        out[t, rows] = residuals
    return out


def pipeline_reference(panel: ArrayLike, weights: ArrayLike) -> FloatArray:
    """The production pipeline with this loop in place of the vectorised residuals."""
    return composite(residual_reference(zscore(panel)), weights)
