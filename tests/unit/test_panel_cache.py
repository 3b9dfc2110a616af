"""The panel cache keys on exact content and hands out arrays that cannot corrupt it."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from app.domain.panel_cache import PanelCache, panel_key
from app.domain.signal_math import FloatArray, signal_pipeline


class CountingCompute:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, panel: NDArray[np.float64]) -> FloatArray:
        self.calls += 1
        return signal_pipeline(panel, [1.0, -1.0])


def test_panels_with_equal_mean_std_and_sum_but_other_values_are_different_entries() -> None:
    rng = np.random.default_rng(1)
    first = rng.standard_normal((2, 8, 2))
    second = first[:, ::-1, :].copy()  # the same values per column, other assets
    assert (first.mean(), first.std(), first.sum()) == (second.mean(), second.std(), second.sum())
    cache, compute = PanelCache(), CountingCompute()
    a = cache.get_or_compute(first, ("residual",), compute)
    b = cache.get_or_compute(second, ("residual",), compute)
    assert compute.calls == 2
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(b, signal_pipeline(second, [1.0, -1.0]))


def test_the_same_content_hits_whatever_array_holds_it() -> None:
    panel = np.random.default_rng(2).standard_normal((3, 6, 2))
    cache, compute = PanelCache(), CountingCompute()
    first = cache.get_or_compute(panel, ("residual",), compute)
    again = cache.get_or_compute(panel.copy(), ("residual",), compute)
    strided = np.asfortranarray(panel)  # other memory layout, same values
    third = cache.get_or_compute(strided, ("residual",), compute)
    assert compute.calls == 1
    assert (cache.hits, cache.misses) == (2, 1)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, third)


def test_parameters_shape_and_dtype_are_part_of_the_key() -> None:
    panel = np.arange(12.0).reshape(2, 3, 2)
    key = panel_key(panel, ("residual", np.array([1.0, 2.0])))
    assert key != panel_key(panel, ("symmetric", np.array([1.0, 2.0])))
    assert key != panel_key(panel, ("residual", np.array([1.0, 2.0000000001])))
    assert key != panel_key(panel.reshape(3, 2, 2), ("residual", np.array([1.0, 2.0])))
    assert key != panel_key(panel.view(np.int64), ("residual", np.array([1.0, 2.0])))
    assert key == panel_key(panel.copy(), ("residual", np.array([1.0, 2.0])))
    assert panel_key(panel, ("ab", "c")) != panel_key(panel, ("a", "bc"))
    with pytest.raises(TypeError, match="cannot key"):
        panel_key(panel, (object(),))  # type: ignore[arg-type]


def test_callers_cannot_change_what_the_cache_holds() -> None:
    panel = np.random.default_rng(3).standard_normal((2, 6, 2))
    cache, compute = PanelCache(), CountingCompute()
    result = cache.get_or_compute(panel, (), compute)
    kept = result.copy()
    with pytest.raises(ValueError, match="read-only"):
        result[0, 0] = 99.0
    with pytest.raises(ValueError, match="WRITEABLE"):
        result.flags.writeable = True
    panel[:] = 0.0  # the caller reuses its input buffer: new content, a new entry
    cache.get_or_compute(panel, (), compute)
    original = np.random.default_rng(3).standard_normal((2, 6, 2))
    np.testing.assert_array_equal(cache.get_or_compute(original, (), compute), kept)
    assert compute.calls == 2


def test_a_result_aliasing_its_input_is_copied_before_it_is_kept() -> None:
    panel = np.ones((1, 2, 2))
    cache = PanelCache()
    result = cache.get_or_compute(panel, (), lambda p: p)
    assert not np.shares_memory(result, panel)
    panel[:] = 5.0
    np.testing.assert_array_equal(cache.get_or_compute(np.ones((1, 2, 2)), (), lambda p: p), 1.0)


def test_least_recently_used_entries_go_first_by_count_and_by_bytes() -> None:
    panels = [np.full((1, 4, 2), float(i)) for i in range(4)]
    cache, compute = PanelCache(max_entries=2), CountingCompute()
    for panel in panels[:2]:
        cache.get_or_compute(panel, (), compute)
    cache.get_or_compute(panels[0], (), compute)  # 0 is now the most recent
    cache.get_or_compute(panels[2], (), compute)  # evicts 1
    assert len(cache) == 2
    cache.get_or_compute(panels[0], (), compute)
    assert compute.calls == 3
    cache.get_or_compute(panels[1], (), compute)
    assert compute.calls == 4

    one_result = 4 * 8  # (1, 4) float64
    by_bytes = PanelCache(max_entries=10, max_bytes=2 * one_result)
    for panel in panels:
        by_bytes.get_or_compute(panel, (), compute)
    assert (len(by_bytes), by_bytes.nbytes) == (2, 2 * one_result)
    tiny = PanelCache(max_bytes=one_result - 1)  # too big to keep: computed, not kept
    tiny.get_or_compute(panels[0], (), compute)
    assert len(tiny) == 0
