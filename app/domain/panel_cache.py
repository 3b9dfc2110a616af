"""An LRU cache of computed panels, keyed by the exact content of the input.

The key is a BLAKE2b digest of the input's dtype, shape and bytes (C order) and of the
parameters, never a summary of them: two panels with the same mean, std and sum but different
values are different keys. A hit returns a read-only view of the cached array (numpy refuses to
make a view of a read-only array writeable again), so a caller cannot corrupt the cache; copy
it to change it. Bounded by entries and by bytes; the least recently used go first.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

CacheParam = str | int | float | bool | None | NDArray[Any] | tuple["CacheParam", ...]
ComputedPanel = NDArray[np.float64]


def panel_key(panel: NDArray[Any], params: tuple[CacheParam, ...]) -> bytes:
    """The exact-content key of ``panel`` computed with ``params``."""
    digest = hashlib.blake2b(digest_size=32)
    _feed(digest, panel)
    _feed(digest, params)
    return digest.digest()


def _feed(digest: hashlib.blake2b, value: CacheParam) -> None:
    # Each value is tagged with its kind and length, so no two inputs feed the same bytes.
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value)
        header = f"array:{data.dtype.str}:{data.shape}:".encode()
        digest.update(header)
        digest.update(data.data)  # the buffer itself, not a copy
    elif isinstance(value, tuple):
        digest.update(f"tuple:{len(value)}:".encode())
        for item in value:
            _feed(digest, item)
    elif value is None or isinstance(value, str | int | float | bool):
        text = repr(value)  # repr of a float is exact: it round-trips
        digest.update(f"{type(value).__name__}:{len(text)}:{text}".encode())
    else:
        raise TypeError(f"cannot key a panel on a {type(value).__name__}")


class PanelCache:
    """``get_or_compute(panel, params, compute)``: ``compute(panel)`` once per distinct
    (content, params), then read-only views of the result. Safe to share between threads;
    two threads missing the same key at once may both compute it."""

    def __init__(self, max_entries: int = 16, max_bytes: int = 1 << 30) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("a panel cache needs room for at least one entry and one byte")
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._entries: OrderedDict[bytes, ComputedPanel] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get_or_compute(
        self,
        panel: ArrayLike,
        params: tuple[CacheParam, ...],
        compute: Callable[[NDArray[Any]], ComputedPanel],
    ) -> ComputedPanel:
        array = np.asarray(panel)
        key = panel_key(array, params)
        with self._lock:
            cached = self._entries.get(key)
            if cached is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return cached.view()
            self.misses += 1
        result = np.array(compute(array), dtype=np.float64)  # ours alone: never the caller's
        result.flags.writeable = False
        if result.nbytes <= self._max_bytes:
            self._keep(key, result)
        return result.view()

    def _keep(self, key: bytes, result: ComputedPanel) -> None:
        with self._lock:
            previous = self._entries.pop(key, None)
            if previous is not None:
                self._bytes -= previous.nbytes
            self._entries[key] = result
            self._bytes += result.nbytes
            while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes
