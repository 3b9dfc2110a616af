"""Cross-sectional signal math on panels: z-score, orthogonalize, combine.

A panel is a float64 array of shape (T, N, K): T timestamps, N assets, K signals, NaN where a
value is missing (any non-finite value counts as missing). Every function works timestamp by
timestamp, returns a new array and never writes into its input (read-only inputs are fine).
Work is done in slabs of timestamps of about ``CHUNK_BYTES`` of input each, so temporaries
stay a small multiple of that whatever T is.

Orthogonalization uses, per timestamp, the assets whose K values are all finite ("valid
rows"); other rows come out NaN. A timestamp comes out all NaN when the regression it needs is
not determined:

- fewer than K + 1 valid assets;
- a signal that is constant with respect to the intercept: its spread over the valid assets
  is at most 1/sqrt(COLLINEAR_VIF) of its root-mean-square level, i.e. ||x - mean||^2 *
  COLLINEAR_VIF <= ||x||^2 (a zero column included);
- collinear signals: some signal's variance inflation factor 1 / (1 - R^2), R^2 of its
  regression with intercept on the other K - 1, exceeds COLLINEAR_VIF (the diagonal of the
  inverse correlation matrix; an inverse that is singular or not positive counts as too).
  The largest VIF bounds the correlation matrix's condition number to [VIF, K^2 VIF], so a
  defined timestamp is never ill-conditioned past K^2 * COLLINEAR_VIF.

These rules are the same for the three methods, so one timestamp is defined for all or none:
never an exception, never a result computed from a singular matrix.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

COLLINEAR_VIF = 1e8  # 1 - R^2 below 1e-8: the residual is rounding, not signal
ZERO_SPREAD_RTOL = 1e-10  # z-score: a spread this small relative to the level is zero
# One slab of input (timestamps of N x K values); its working copies stay in cache.
CHUNK_BYTES = 4 * 2**20
SCRATCH_KEEP_BYTES = 2 * CHUNK_BYTES  # per thread, kept between calls (see _Scratch)


class OrthogonalizationMethod(StrEnum):
    RESIDUAL = "residual"  # each signal's residual on all the others, with intercept
    SYMMETRIC = "symmetric"  # Löwdin: Z C^(-1/2), the orthonormal set nearest to Z
    SEQUENTIAL = "sequential"  # Gram-Schmidt in a given order


# -- the functions ---------------------------------------------------------------------------
def zscore(panel: ArrayLike) -> FloatArray:
    """Cross-sectional z-score per timestamp and signal: (x - mean) / std over the assets
    where x is finite, population std (ddof=0), as zipline's ``zscore`` factor does.

    Missing inputs stay NaN. A (timestamp, signal) with fewer than 2 finite values, or a std
    of zero to rounding (at most ``ZERO_SPREAD_RTOL`` of the root-mean-square level), is NaN
    for every asset.
    """
    x = _as_panel(panel)
    out = np.empty(x.shape)
    with np.errstate(all="ignore"):
        for slab in _slabs(x.shape):
            values = _signals_major(x[slab])
            z = _deviations_in_place(values)
            np.multiply(values, z.scale[:, :, None], out=values)
            np.copyto(values, np.nan, where=z.missing | z.degenerate[:, :, None])
            np.copyto(out[slab], values.transpose(0, 2, 1))
    return out


def orthogonalize(
    panel: ArrayLike,
    method: OrthogonalizationMethod | str = OrthogonalizationMethod.RESIDUAL,
    order: Sequence[int] | None = None,
) -> FloatArray:
    """Orthogonalize the K signals per timestamp over the valid assets (see the module's
    rules for what comes out NaN).

    - ``residual``: column k is the residual of signal k after least squares with intercept on
      the other K - 1 signals (the reference semantics). Computed for all k at once: with Xc
      the centred valid rows and P = (Xc' Xc)^-1, the residual of k is (Xc P)[:, k] / P[k, k].
      Residual columns are orthogonal to every other input column and to the intercept, not
      to each other.
    - ``symmetric``: Löwdin, Xc C^(-1/2) with C the population covariance of the valid rows.
      Columns are centred, of unit population variance, mutually orthogonal, and the result
      does not depend on the order of the signals (permuting inputs permutes outputs).
    - ``sequential``: Gram-Schmidt in ``order`` (a permutation of 0..K-1, default 0..K-1), by
      the Cholesky factor of C; columns stay in their original positions, centred, of unit
      population variance, mutually orthogonal. The first signal in ``order`` comes out as
      itself centred and divided by its population std (a z-score over the valid rows).

    ``symmetric`` and ``sequential`` take a second, correcting pass (as CholeskyQR2 does), so
    columns are orthogonal to rounding even for ill-conditioned timestamps.
    """
    x = _as_panel(panel)
    kind = _as_method(method)
    permutation = _as_order(order, x.shape[2], kind)
    out = np.empty(x.shape)
    with np.errstate(all="ignore"):
        for slab in _slabs(x.shape):
            values = _signals_major(x[slab])
            rows = _complete_rows(_zero_missing(values))
            timestamps, signals = values.shape[:2]
            centred = _centre_in_place(
                values, rows, np.zeros(timestamps, dtype=bool), np.ones((timestamps, signals))
            )
            maker = _orthogonal_maker(values, centred, kind, permutation)
            target = out[slab]
            np.matmul(values.transpose(0, 2, 1), maker, out=target)
            np.copyto(target, np.nan, where=~centred.defined[:, :, None])
    return out


def composite(panel: ArrayLike, weights: ArrayLike) -> FloatArray:
    """Weighted sum over the K signals per (timestamp, asset): shape (T, N).

    An asset missing any of its K signals is NaN (a sum over part of the signals would be a
    different signal); so is a sum that is not finite. ``weights`` is K finite numbers, used
    as given (not normalised).
    """
    x = _as_panel(panel)
    w = _as_weights(weights, x.shape[2])
    out = np.empty(x.shape[:2])
    with np.errstate(all="ignore"):
        for slab in _slabs(x.shape):
            block = x[slab]
            target = out[slab]
            np.matmul(block, w, out=target)
            defined = np.logical_and.reduce(np.isfinite(block), axis=2) & np.isfinite(target)
            np.copyto(target, np.nan, where=~defined)
    return out


def signal_pipeline(
    panel: ArrayLike,
    weights: ArrayLike,
    method: OrthogonalizationMethod | str = OrthogonalizationMethod.RESIDUAL,
    order: Sequence[int] | None = None,
) -> FloatArray:
    """``composite(orthogonalize(zscore(panel), method, order), weights)``, shape (T, N).

    The same result in fewer passes over the data. Each slab of timestamps goes through all
    three steps before the next starts, so no whole-panel intermediate is held. The z-score's
    division by the std is not applied to the data: orthogonalization is linear per timestamp
    (Xc @ M), so the scales fold into M, and the composite folds in too: Xc @ (M @ w), one
    matrix-vector product per timestamp instead of building the K orthogonal columns.
    """
    x = _as_panel(panel)
    kind = _as_method(method)
    permutation = _as_order(order, x.shape[2], kind)
    w = _as_weights(weights, x.shape[2])
    out = np.empty(x.shape[:2])
    with np.errstate(all="ignore"):
        for slab in _slabs(x.shape):
            values = _signals_major(x[slab])
            z = _deviations_in_place(values)
            rows = _complete_rows(z.missing)
            undefined = np.logical_or.reduce(z.degenerate, axis=1)
            centred = _centre_in_place(values, rows, undefined, z.scale)
            combine = _orthogonal_maker(values, centred, kind, permutation) @ w
            target = out[slab]
            np.matmul(combine[:, None, :], values, out=target[:, None, :])
            np.copyto(target, np.nan, where=~centred.defined)
    return out


def release_scratch_buffers() -> None:
    """Drop this thread's scratch buffers (a few MiB, kept between calls to save page faults;
    see ``_Scratch``). The next call allocates them again."""
    _SCRATCH.kept.clear()


# -- input checks ----------------------------------------------------------------------------
def _as_panel(panel: ArrayLike) -> FloatArray:
    x = np.asarray(panel, dtype=np.float64)  # no copy when it already is float64
    if x.ndim != 3:
        raise ValueError(f"a panel has shape (T, N, K); got {x.ndim} dimension(s) {x.shape}")
    if x.shape[2] == 0:
        raise ValueError("a panel needs at least one signal (K >= 1)")
    return x


def _as_method(method: OrthogonalizationMethod | str) -> OrthogonalizationMethod:
    try:
        return OrthogonalizationMethod(method)
    except ValueError:
        known = ", ".join(m.value for m in OrthogonalizationMethod)
        raise ValueError(f"unknown orthogonalization method {method!r}; one of {known}") from None


def _as_order(
    order: Sequence[int] | None, signals: int, method: OrthogonalizationMethod
) -> NDArray[np.intp]:
    if order is None:
        return np.arange(signals)
    if method is not OrthogonalizationMethod.SEQUENTIAL:
        raise ValueError(f"order applies to the sequential method only, not {method.value}")
    permutation = np.asarray(order)
    if (
        permutation.shape != (signals,)
        or not np.issubdtype(permutation.dtype, np.integer)
        or sorted(permutation.tolist()) != list(range(signals))
    ):
        raise ValueError(f"order must be a permutation of 0..{signals - 1}; got {order!r}")
    return permutation.astype(np.intp)


def _as_weights(weights: ArrayLike, signals: int) -> FloatArray:
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (signals,):
        raise ValueError(f"weights must have shape ({signals},), one per signal; got {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError(f"weights must be finite; got {w.tolist()}")
    return w


def _slabs(shape: tuple[int, ...]) -> Iterator[slice]:
    timestamps, assets, signals = shape
    per_timestamp = max(1, assets * signals * 8)
    step = max(1, CHUNK_BYTES // per_timestamp)
    for start in range(0, timestamps, step):
        yield slice(start, min(start + step, timestamps))


# -- per slab --------------------------------------------------------------------------------
# A slab is worked on signals-major, (t, K, N): sums over assets run along contiguous memory
# and per-signal values broadcast along it, several times faster than over (t, N, K)'s middle
# axis.
def _signals_major(x: FloatArray) -> FloatArray:
    """A (t, K, N) copy of a (t, N, K) slab, ours to change in place: the thread's scratch
    buffer (never the input, even where the transposed view is contiguous already)."""
    timestamps, assets, signals = x.shape
    values: FloatArray = _SCRATCH.take("values", (timestamps, signals, assets), np.float64)
    np.copyto(values, x.transpose(0, 2, 1))
    return values


def _zero_missing(values: FloatArray) -> BoolArray:
    """Zero the non-finite values in place; return where they were."""
    missing: BoolArray = _SCRATCH.take("missing", values.shape, np.bool_)
    np.isfinite(values, out=missing)
    np.logical_not(missing, out=missing)
    np.copyto(values, 0.0, where=missing)
    return missing


def _complete_rows(missing: BoolArray) -> BoolArray:
    """(t, K, N) missing -> (t, N): the assets with all K signals. One signal at a time:
    numpy's reduction over the short middle axis is a few times slower."""
    incomplete = missing[:, 0, :].copy()
    for k in range(1, missing.shape[1]):
        np.logical_or(incomplete, missing[:, k, :], out=incomplete)
    return ~incomplete


class _Scratch(threading.local):
    """Per-thread buffers for a slab's working copy and mask, reused across slabs and calls.

    Why: a fresh array of more than a few hundred KiB is a fresh mmap, and numpy's first
    touch of each page faults; on the small panel that cost more than the arithmetic. What
    a buffer must honour: it only ever holds one slab's scratch, is fully written before it
    is read, and never reaches a caller (every result is a new array). Buffers above
    ``SCRATCH_KEEP_BYTES`` are allocated per use and not kept.
    """

    def __init__(self) -> None:
        self.kept: dict[str, NDArray[np.uint8]] = {}

    def take(self, name: str, shape: tuple[int, ...], dtype: type[np.generic]) -> NDArray[Any]:
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        if nbytes > SCRATCH_KEEP_BYTES:
            return np.empty(shape, dtype)
        buffer = self.kept.get(name)
        if buffer is None or buffer.nbytes < nbytes:
            buffer = self.kept[name] = np.empty(nbytes, np.uint8)
        return buffer[:nbytes].view(dtype).reshape(shape)


_SCRATCH = _Scratch()


@dataclass(frozen=True, slots=True)
class _ZScore:
    """A slab's z-score, left as deviations in the values: z = values * scale."""

    missing: BoolArray  # (t, K, N): not finite in the input
    degenerate: BoolArray  # (t, K): fewer than 2 values, or a std of zero to rounding
    scale: FloatArray  # (t, K): 1 / std; 0 where degenerate


def _deviations_in_place(values: FloatArray) -> _ZScore:
    """Replace a signals-major slab's values by their deviations from the mean of the finite
    values of their (timestamp, signal); missing values deviate by nothing (0)."""
    missing = _zero_missing(values)
    counts = values.shape[2] - np.count_nonzero(missing, axis=2)
    ones = np.ones(values.shape[2])
    mean = (values @ ones) / np.maximum(counts, 1)
    np.subtract(values, mean[:, :, None], out=values)
    np.copyto(values, 0.0, where=missing)
    variance = np.einsum("tkn,tkn->tk", values, values) / np.maximum(counts, 1)
    level_squared = variance + mean * mean
    degenerate = (counts < 2) | (variance <= ZERO_SPREAD_RTOL**2 * level_squared)
    scale = np.where(degenerate, 0.0, 1.0 / np.sqrt(variance))
    return _ZScore(missing, degenerate, scale)


@dataclass(frozen=True, slots=True)
class _Centred:
    """What the collinearity rules found about one slab, whose values were centred in place
    on the valid rows (and zeroed on the others, so they add nothing to the Gram). The
    output's coordinates are the values times ``scale``, column by column."""

    defined: BoolArray  # (t, N): a valid row at a timestamp that is not undefined
    undefined: BoolArray  # (t,): too few rows, a constant signal, or collinear signals
    counts: FloatArray  # (t,): valid rows
    gram: FloatArray  # (t, K, K): Xc' Xc
    spread: FloatArray  # (t, K): column norms of Xc; 1 where undefined
    scale: FloatArray  # (t, K)
    inverse_correlation: FloatArray  # (t, K, K); identity where undefined


def _centre_in_place(
    values: FloatArray, rows: BoolArray, undefined: BoolArray, scale: FloatArray
) -> _Centred:
    """Centre a signals-major slab (finite, zero where missing) on its valid ``rows``, zero
    the others, and apply the rules; ``undefined`` marks timestamps already undefined. The
    rules are the same in any column scale, so they are applied to the values as they are."""
    signals = values.shape[1]
    row_weights = rows.astype(np.float64)  # 1 on valid rows, 0 elsewhere
    counts: FloatArray = np.add.reduce(row_weights, axis=1)
    mean = (values @ row_weights[:, :, None])[:, :, 0] / np.maximum(counts, 1.0)[:, None]
    np.subtract(values, mean[:, :, None], out=values)
    np.multiply(values, row_weights[:, None, :], out=values)
    gram = values @ values.transpose(0, 2, 1)
    spread_squared = np.diagonal(gram, axis1=1, axis2=2)
    level_squared = spread_squared + counts[:, None] * mean * mean
    varies = (spread_squared * COLLINEAR_VIF > level_squared).all(axis=1)
    undefined = undefined | (counts < signals + 1) | ~varies
    spread = np.where(undefined[:, None], 1.0, np.sqrt(spread_squared))
    correlation = gram / (spread[:, :, None] * spread[:, None, :])
    correlation[undefined] = np.eye(signals)
    inverse, failed = _each_matrix(_inverse, correlation)
    vif = np.diagonal(inverse, axis1=1, axis2=2)
    # VIF >= 1 exactly; a diagonal below that is an inverse of a matrix singular to rounding.
    collinear = ~((vif >= 0.5) & (vif <= COLLINEAR_VIF)).all(axis=1)
    undefined |= failed | collinear
    inverse[undefined] = np.eye(signals)
    defined = rows & ~undefined[:, None]
    return _Centred(defined, undefined, counts, gram, spread, scale, inverse)


def _orthogonal_maker(
    values: FloatArray,
    centred: _Centred,
    method: OrthogonalizationMethod,
    permutation: NDArray[np.intp],
) -> FloatArray:
    """(t, K, K) M with Xc @ M the method's output, in the output's coordinates.
    ``symmetric`` and ``sequential`` are taken twice: the second pass, computed on the
    first's output, corrects its loss of orthogonality (about eps * cond(C)); ``values``
    then holds the first pass's output, and M is the second pass's."""
    if method is OrthogonalizationMethod.RESIDUAL:
        return _residual_maker(centred)
    transform = _transform(method, permutation)
    scale = centred.scale
    scaled_gram = centred.gram * scale[:, :, None] * scale[:, None, :]
    first = scale[:, :, None] * transform(_covariance(scaled_gram, centred))
    np.copyto(values, first.transpose(0, 2, 1) @ values)
    return transform(_covariance(values @ values.transpose(0, 2, 1), centred))


def _residual_maker(centred: _Centred) -> FloatArray:
    """M with Xc @ M = all K leave-one-out residuals, each times its column's scale:
    M[i, k] = P[i, k] / P[k, k] in the correlation scale (P the inverse correlation), taken
    back to the data's scale."""
    spread = centred.spread
    inverse = centred.inverse_correlation
    vif = np.diagonal(inverse, axis1=1, axis2=2)
    column = (spread * centred.scale) / vif
    return inverse * (column[:, None, :] / spread[:, :, None])


def _covariance(gram: FloatArray, centred: _Centred) -> FloatArray:
    """Population covariance from a Gram matrix of the slab's rows; identity where the
    timestamp is undefined, which keeps LAPACK away from it."""
    covariance = gram / np.maximum(centred.counts, 1.0)[:, None, None]
    covariance[centred.undefined] = np.eye(gram.shape[1])
    return covariance


def _transform(
    method: OrthogonalizationMethod, permutation: NDArray[np.intp]
) -> Callable[[FloatArray], FloatArray]:
    """C -> B such that Xc @ B is the method's orthogonal set (C = Xc' Xc / n)."""
    if method is OrthogonalizationMethod.SYMMETRIC:
        return _inverse_square_root
    inverse_permutation = np.argsort(permutation)

    def gram_schmidt(covariance: FloatArray) -> FloatArray:
        # Pm L^-T Pm' with Pm L L' Pm' = C: the columns taken in order, left in place.
        permuted = covariance[:, permutation][:, :, permutation]
        lower, _ = _each_matrix(_cholesky, permuted)  # NaN (never raising) where refused
        upper = _each_matrix(_inverse, lower)[0].transpose(0, 2, 1)
        return upper[:, inverse_permutation][:, :, inverse_permutation]

    return gram_schmidt


def _inverse_square_root(covariance: FloatArray) -> FloatArray:
    """C^(-1/2), the symmetric one, from C's eigen-decomposition."""
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    vectors = eigenvectors.astype(np.float64, copy=False)
    scaled: FloatArray = vectors / np.sqrt(eigenvalues)[:, None, :]
    return scaled @ vectors.transpose(0, 2, 1)


def _inverse(stack: FloatArray) -> FloatArray:
    return np.linalg.inv(stack).astype(np.float64, copy=False)


def _cholesky(stack: FloatArray) -> FloatArray:
    return np.linalg.cholesky(stack).astype(np.float64, copy=False)


def _each_matrix(
    function: Callable[[FloatArray], FloatArray], stack: FloatArray
) -> tuple[FloatArray, BoolArray]:
    """``function`` over a stack of matrices; where LAPACK refuses one (singular, not positive
    definite), that matrix is NaN and flagged instead of the whole stack raising."""
    failed = np.zeros(stack.shape[0], dtype=bool)
    try:
        return function(stack), failed
    except np.linalg.LinAlgError:
        result = np.full(stack.shape, np.nan)
        for i, matrix in enumerate(stack):
            try:
                result[i] = function(matrix)
            except np.linalg.LinAlgError:
                failed[i] = True
        return result, failed
