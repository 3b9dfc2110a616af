"""Cross-sectional signal math against its definitions: the per-timestamp lstsq loop for the
residuals, scipy for the z-score, orthogonality and order for the other two methods."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from random import Random

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain import signal_math
from app.domain.signal_math import (
    COLLINEAR_VIF,
    FloatArray,
    composite,
    orthogonalize,
    signal_pipeline,
    zscore,
)
from tests.helpers.signal_reference import pipeline_reference, residual_reference

PROPERTY = settings(max_examples=60, deadline=None)
ORTHOGONAL = ("symmetric", "sequential")
METHODS = ("residual", *ORTHOGONAL)


@st.composite
def panels(draw: st.DrawFn) -> FloatArray:
    """Random (T, N, K) panels: NaN patterns, a collinear or constant signal at some
    timestamps, timestamps with too few (or just enough) valid assets. Values come from a
    seeded generator: hypothesis drives the structure, not the float bits."""
    timestamps = draw(st.integers(1, 6))
    assets = draw(st.integers(0, 40))
    signals = draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((timestamps, assets, signals)) * rng.uniform(0.1, 10, signals)
    x += rng.uniform(-5, 5, signals)
    at = draw(st.integers(0, timestamps - 1))
    if signals >= 2 and draw(st.booleans()):  # one signal a combination of the others
        target = draw(st.integers(0, signals - 1))
        others = [k for k in range(signals) if k != target]
        x[at, :, target] = x[at][:, others] @ rng.standard_normal(len(others)) + 3.0
    if draw(st.booleans()):
        x[draw(st.integers(0, timestamps - 1)), :, draw(st.integers(0, signals - 1))] = 2.5
    x[rng.random(x.shape) < draw(st.sampled_from([0.0, 0.02, 0.1, 0.3]))] = np.nan
    if draw(st.booleans()):  # keep only about K valid assets at one timestamp
        keep = draw(st.integers(0, signals + 2))
        x[draw(st.integers(0, timestamps - 1)), keep:, 0] = np.nan
    return x


def defined_timestamps(out: FloatArray) -> list[tuple[int, FloatArray]]:
    """(t, the timestamp's defined rows) for each timestamp with any."""
    result = []
    for t in range(out.shape[0]):
        rows = np.isfinite(out[t]).all(axis=1)
        if rows.any():
            result.append((t, out[t][rows]))
    return result


def off_diagonal_correlation(columns: FloatArray) -> float:
    """The largest |cosine| between two different columns."""
    gram = columns.T @ columns
    norms = np.sqrt(np.diag(gram))
    cosines = gram / np.outer(norms, norms)
    return float(np.abs(cosines - np.diag(np.diag(cosines))).max(initial=0.0))


# -- residual: the reference semantics -------------------------------------------------------
@PROPERTY
@given(panels())
def test_residuals_match_the_lstsq_loop_on_z_scored_panels(x: FloatArray) -> None:
    z = zscore(x)
    np.testing.assert_allclose(orthogonalize(z), residual_reference(z), rtol=0, atol=1e-9)


@PROPERTY
@given(panels())
def test_residuals_match_the_lstsq_loop_on_raw_panels_where_defined_alike(
    x: FloatArray,
) -> None:
    produced, expected = orthogonalize(x), residual_reference(x)
    np.testing.assert_array_equal(np.isnan(produced), np.isnan(expected))
    scale = np.nanmax(np.abs(x), initial=1.0)
    np.testing.assert_allclose(produced, expected, rtol=0, atol=1e-9 * scale)


def test_a_timestamp_needs_k_plus_one_valid_assets() -> None:
    rng = np.random.default_rng(7)
    signals = 3
    x = rng.standard_normal((2, 10, signals))
    x[0, signals:, 1] = np.nan  # K valid assets at t=0
    x[1, signals + 1 :, 2] = np.nan  # K + 1 at t=1
    out = orthogonalize(x)
    assert np.isnan(out[0]).all()
    assert np.isfinite(out[1, : signals + 1]).all()
    assert np.isnan(out[1, signals + 1 :]).all()
    np.testing.assert_allclose(out, residual_reference(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_collinear_or_constant_signals_make_only_their_timestamp_nan(method: str) -> None:
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 30, 3))
    x[0, :, 2] = 2 * x[0, :, 0] - x[0, :, 1] + 1  # collinear with the intercept
    x[1, :, 1] = x[1, :, 0]  # an exact duplicate: singular to LAPACK itself
    x[2, :, 0] = 4.0  # constant
    out = orthogonalize(x, method)
    assert np.isnan(out[:3]).all()
    assert np.isfinite(out[3]).all()
    assert np.isnan(residual_reference(x)[:3]).all()


def test_a_nearly_collinear_signal_is_kept_below_the_vif_limit_and_dropped_above() -> None:
    rng = np.random.default_rng(9)
    base = rng.standard_normal((200, 2))
    noise = rng.standard_normal(200)
    x = np.empty((2, 200, 3))
    for t, vif in enumerate((COLLINEAR_VIF / 100, COLLINEAR_VIF * 100)):
        # VIF = 1 / (1 - R^2): noise of relative variance 1/vif around a combination.
        combination = base @ np.array([1.0, -2.0])
        x[t, :, :2] = base
        x[t, :, 2] = combination + noise * np.std(combination) / np.sqrt(vif)
    out = orthogonalize(x)
    assert np.isfinite(out[0]).all()
    assert np.isnan(out[1]).all()
    np.testing.assert_allclose(out, residual_reference(x), rtol=0, atol=1e-9)


def test_rows_missing_a_signal_are_nan_and_the_rest_regress_on_their_own() -> None:
    rng = np.random.default_rng(10)
    x = rng.standard_normal((1, 25, 3))
    x[0, [3, 11], 1] = np.nan
    out = orthogonalize(x)
    assert np.isnan(out[0, [3, 11]]).all()
    alone = orthogonalize(np.delete(x, [3, 11], axis=1))
    np.testing.assert_allclose(np.delete(out, [3, 11], axis=1), alone, rtol=0, atol=1e-12)


def test_one_signal_regresses_on_the_intercept_alone() -> None:
    x = np.array([[[1.0], [2.0], [np.nan], [6.0]]])
    np.testing.assert_allclose(orthogonalize(x), [[[-2.0], [-1.0], [np.nan], [3.0]]])


def test_no_assets_and_no_timestamps_give_empty_results() -> None:
    assert orthogonalize(np.empty((3, 0, 2))).shape == (3, 0, 2)
    assert signal_pipeline(np.empty((0, 5, 2)), [1.0, 1.0]).shape == (0, 5)


def test_slab_boundaries_do_not_change_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(11)
    x = rng.standard_normal((9, 20, 3))
    x[rng.random(x.shape) < 0.05] = np.nan
    weights = [1.0, -0.5, 2.0]
    whole = {m: (orthogonalize(x, m), signal_pipeline(x, weights, m)) for m in METHODS}
    monkeypatch.setattr(signal_math, "CHUNK_BYTES", 1)  # one timestamp per slab
    for method, (orthogonal, combined) in whole.items():
        np.testing.assert_allclose(orthogonalize(x, method), orthogonal, rtol=0, atol=1e-12)
        np.testing.assert_allclose(signal_pipeline(x, weights, method), combined, atol=1e-12)


def test_reused_scratch_buffers_give_what_fresh_ones_give(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(15)
    small, large = rng.standard_normal((4, 9, 3)), rng.standard_normal((6, 30, 3))
    large[rng.random(large.shape) < 0.1] = np.nan
    weights = [1.0, 2.0, -1.0]
    reused = [signal_pipeline(p, weights) for p in (large, small, large)]  # shrink, regrow
    np.testing.assert_array_equal(reused[0], reused[2])
    signal_math.release_scratch_buffers()
    monkeypatch.setattr(signal_math, "SCRATCH_KEEP_BYTES", 0)  # allocate afresh every time
    np.testing.assert_array_equal(signal_pipeline(small, weights), reused[1])
    np.testing.assert_array_equal(signal_pipeline(large, weights), reused[0])


def test_threads_each_use_their_own_scratch_buffers() -> None:
    rng = np.random.default_rng(16)
    panels = [rng.standard_normal((40, 50, 4)) for _ in range(6)]
    weights = [1.0, 0.5, -1.0, 2.0]
    expected = [signal_pipeline(p, weights) for p in panels]
    with ThreadPoolExecutor(max_workers=3) as pool:
        for _ in range(5):
            got = list(pool.map(lambda p: signal_pipeline(p, weights), panels))
            for result, wanted in zip(got, expected, strict=True):
                np.testing.assert_array_equal(result, wanted)


# -- symmetric and sequential ----------------------------------------------------------------
@PROPERTY
@given(panels(), st.sampled_from(ORTHOGONAL))
def test_orthogonal_methods_give_centred_orthogonal_unit_variance_columns(
    x: FloatArray, method: str
) -> None:
    z = zscore(x)
    out = orthogonalize(z, method)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(residual_reference(z)))
    for _, columns in defined_timestamps(out):
        assert off_diagonal_correlation(columns) <= 1e-10
        np.testing.assert_allclose(columns.mean(axis=0), 0.0, atol=1e-9)
        np.testing.assert_allclose(columns.std(axis=0), 1.0, rtol=1e-9)


@PROPERTY
@given(panels(), st.randoms(use_true_random=False))
def test_symmetric_does_not_depend_on_the_order_of_the_signals(
    x: FloatArray, random: Random
) -> None:
    permutation = list(range(x.shape[2]))
    random.shuffle(permutation)
    z = zscore(x)
    np.testing.assert_allclose(
        orthogonalize(z[:, :, permutation], "symmetric"),
        orthogonalize(z, "symmetric")[:, :, permutation],
        rtol=0,
        atol=1e-8,
    )


@PROPERTY
@given(panels(), st.randoms(use_true_random=False))
def test_sequential_starts_from_the_first_signal_in_order_and_keeps_positions(
    x: FloatArray, random: Random
) -> None:
    order = list(range(x.shape[2]))
    random.shuffle(order)
    z = zscore(x)
    out = orthogonalize(z, "sequential", order)
    # Gram-Schmidt of the reordered signals, put back in the original positions.
    reordered = orthogonalize(z[:, :, order], "sequential")
    np.testing.assert_allclose(out[:, :, order], reordered, rtol=0, atol=1e-8)
    for t, _ in defined_timestamps(out):
        rows = np.isfinite(out[t]).all(axis=1)
        first = z[t][rows][:, order[0]]
        expected = (first - first.mean()) / first.std()
        np.testing.assert_allclose(out[t][rows][:, order[0]], expected, rtol=0, atol=1e-10)


def test_the_qr_trap_q_times_r_gives_back_x_and_orthogonalizes_nothing() -> None:
    rng = np.random.default_rng(12)
    mixing = np.array([[1.0, 0.8, 0.5], [0.0, 0.6, 0.5], [0.0, 0.0, 0.7]])
    x = rng.standard_normal((1, 200, 3)) @ mixing  # correlated signals
    xc = x[0] - x[0].mean(axis=0)
    q, r = np.linalg.qr(xc)
    np.testing.assert_allclose(q @ r, xc, atol=1e-12)  # X itself: nothing removed
    assert off_diagonal_correlation(q @ r) > 0.5
    residuals = orthogonalize(x)[0]
    # Each residual is orthogonal to every other signal (and to the intercept) ...
    cross = xc.T @ residuals
    np.fill_diagonal(cross, 0.0)
    assert np.abs(cross).max() <= 1e-9 * np.abs(xc).max() * np.abs(residuals).max() * 200
    np.testing.assert_allclose(residuals.sum(axis=0), 0.0, atol=1e-10)
    assert np.abs(residuals - xc).max() > 0.1  # ... and not X again
    for method in ORTHOGONAL:
        assert off_diagonal_correlation(orthogonalize(x, method)[0]) <= 1e-10


# -- z-score ---------------------------------------------------------------------------------
@PROPERTY
@given(panels())
def test_zscore_is_scipys_over_the_finite_values_of_each_timestamp_and_signal(
    x: FloatArray,
) -> None:
    z = zscore(x)
    timestamps, _, signals = x.shape
    for t in range(timestamps):
        for k in range(signals):
            present = np.isfinite(x[t, :, k])
            assert np.isnan(z[t, ~present, k]).all()
            values = x[t, present, k]
            if values.size < 2 or np.ptp(values) == 0:
                assert np.isnan(z[t, :, k]).all()
                continue
            expected = scipy.stats.zscore(values, ddof=0)
            np.testing.assert_allclose(z[t, present, k], expected, rtol=1e-12, atol=1e-12)


def test_zscore_of_complete_rows_is_scipys_along_assets() -> None:
    x = np.random.default_rng(13).standard_normal((5, 30, 4)) * 3 + 7
    np.testing.assert_allclose(zscore(x), scipy.stats.zscore(x, axis=1, ddof=0), atol=1e-12)


def test_zscore_makes_one_value_or_a_constant_nan_and_keeps_the_rest() -> None:
    x = np.array([[[1.0, 0.1, 5.0], [np.nan, 0.1, 6.0], [np.nan, 0.1, np.nan]]])
    z = zscore(x)
    assert np.isnan(z[0, :, :2]).all()  # one finite value; constant to rounding
    np.testing.assert_allclose(z[0, :2, 2], [-1.0, 1.0])
    assert np.isnan(z[0, 2, 2])


# -- composite and the pipeline --------------------------------------------------------------
def test_composite_is_the_weighted_sum_and_nan_where_any_signal_is_missing() -> None:
    x = np.array([[[1.0, 2.0], [3.0, np.nan], [0.5, -1.0]]])
    out = composite(x, [2.0, 0.0])
    np.testing.assert_array_equal(out, [[2.0 * 1.0, np.nan, 1.0]])
    assert out.shape == (1, 3)


@PROPERTY
@given(panels(), st.sampled_from(METHODS))
def test_the_pipeline_is_zscore_then_orthogonalize_then_composite(
    x: FloatArray, method: str
) -> None:
    weights = np.linspace(-1.0, 2.0, x.shape[2])
    steps = composite(orthogonalize(zscore(x), method), weights)
    np.testing.assert_allclose(signal_pipeline(x, weights, method), steps, rtol=0, atol=1e-9)
    if method == "residual":
        expected = pipeline_reference(x, weights)
        np.testing.assert_allclose(signal_pipeline(x, weights), expected, rtol=0, atol=1e-9)


# -- inputs ----------------------------------------------------------------------------------
CALLS: dict[str, Callable[[FloatArray], FloatArray]] = {
    "zscore": zscore,
    "residual": lambda x: orthogonalize(x, "residual"),
    "symmetric": lambda x: orthogonalize(x, "symmetric"),
    "sequential": lambda x: orthogonalize(x, "sequential", [2, 0, 1]),
    "composite": lambda x: composite(x, [1.0, 2.0, 3.0]),
    "pipeline": lambda x: signal_pipeline(x, [1.0, 2.0, 3.0]),
}


@pytest.mark.parametrize("name", CALLS)
@pytest.mark.parametrize("shape", [(3, 12, 3), (4, 1, 3)])
def test_inputs_are_never_modified_and_may_be_read_only(
    name: str, shape: tuple[int, int, int]
) -> None:
    x = np.random.default_rng(14).standard_normal(shape)
    x[0, 0, 0] = np.nan
    before = x.copy()
    out = CALLS[name](x)
    np.testing.assert_array_equal(x, before)
    assert not np.shares_memory(out, x)
    x.flags.writeable = False
    np.testing.assert_array_equal(CALLS[name](x), out)


@pytest.mark.parametrize("name", CALLS)
def test_any_memory_layout_gives_the_same_result(name: str) -> None:
    x = np.random.default_rng(17).standard_normal((4, 15, 3))
    x[1, 3, 2] = np.nan
    expected = CALLS[name](x)
    for layout in (np.asfortranarray(x), x[:, ::-1, :][:, ::-1, :]):
        np.testing.assert_allclose(CALLS[name](layout), expected, rtol=0, atol=1e-12)
    single = x.astype(np.float32)  # converted to float64 first
    np.testing.assert_allclose(CALLS[name](single), expected, rtol=1e-5, atol=1e-5)


@PROPERTY
@given(panels(), st.sampled_from(METHODS))
def test_no_function_writes_into_its_input(x: FloatArray, method: str) -> None:
    before = x.copy()
    x.flags.writeable = False  # numpy itself refuses any write
    weights = np.ones(x.shape[2])
    zscore(x)
    orthogonalize(x, method)
    composite(x, weights)
    signal_pipeline(x, weights, method)
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: zscore(np.zeros((4, 3))), "shape \\(T, N, K\\); got 2 dimension"),
        (lambda: orthogonalize(np.zeros((1, 2, 3, 4))), "got 4 dimension"),
        (lambda: composite(np.zeros((2, 3, 0)), []), "at least one signal"),
        (lambda: orthogonalize(np.zeros((1, 4, 2)), "qr"), "unknown orthogonalization method"),
        (lambda: orthogonalize(np.zeros((1, 4, 2)), "residual", [1, 0]), "sequential method only"),
        (lambda: orthogonalize(np.zeros((1, 4, 2)), "sequential", [0, 0]), "permutation"),
        (lambda: orthogonalize(np.zeros((1, 4, 2)), "sequential", [0.0, 1.0]), "permutation"),  # type: ignore[list-item]
        (lambda: composite(np.zeros((1, 4, 2)), [1.0]), "weights must have shape \\(2,\\)"),
        (lambda: composite(np.zeros((1, 4, 2)), [[1.0, 2.0]]), "weights must have shape"),
        (lambda: signal_pipeline(np.zeros((1, 4, 2)), [1.0, np.nan]), "weights must be finite"),
        (lambda: signal_pipeline(np.zeros((1, 4, 2)), [np.inf, 1.0]), "weights must be finite"),
    ],
)
def test_bad_input_is_a_value_error_that_says_what_is_wrong(
    call: Callable[[], object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        call()
