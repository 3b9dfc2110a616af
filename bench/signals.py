"""``python -m bench signals``: the signal pipeline against its reference loop, in one run,
then a large panel's wall time and peak memory.

Small panel (N=60 assets, K=6 signals, T=252 timestamps, 3 % NaN): ``signal_pipeline``
(z-score, residual orthogonalization, composite) and its reference, the same steps with the
per-timestamp, per-signal ``lstsq`` loop in place of the vectorised residuals. They take turns
in rounds (one reference call, then a share of the production calls), so a noisy neighbour
hurts both alike; each call is timed alone. The two results are compared before timing.
``symmetric`` and ``sequential`` are timed too, for information, and so is the production
pipeline with its scratch buffers allocated afresh on every call (what their reuse saves).

Large panel (N=3000, K=20, T=2520: 1.2 GB of float64): the production pipeline's wall time
over a few runs (each followed by one without scratch-buffer reuse), and its peak memory
beyond the input, two ways: tracemalloc around one call (numpy reports its buffers to it),
and a child process's peak RSS (``ru_maxrss``) minus the peak it had once its input was
built. The input is made slab by slab, so making it adds no full-size temporary.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from app.domain import signal_math
from app.domain.signal_math import FloatArray, release_scratch_buffers, signal_pipeline
from bench.signal_reference import pipeline_reference
from bench.signals_report import (
    Call,
    LargeResult,
    SignalBenchReport,
    SmallResult,
    Timing,
    format_table,
)

Shape = tuple[int, int, int]
GENERATE_BYTES = 8 * 2**20  # the input is made in slabs this big: no full-size temporaries


@dataclass(frozen=True, slots=True)
class SignalBenchOptions:
    runs: int = 200  # production calls on the small panel
    reference_runs: int = 7
    method_runs: int = 50  # symmetric and sequential, each
    large: bool = True
    large_runs: int = 3
    rss_check: bool = True  # the child-process cross-check of the large panel's memory
    seed: int = 1
    small_shape: Shape = (252, 60, 6)
    large_shape: Shape = (2520, 3000, 20)
    nan_fraction: float = 0.03

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> SignalBenchOptions:
        return cls(
            runs=args.runs,
            reference_runs=args.reference_runs,
            method_runs=args.method_runs,
            large=args.large,
            large_runs=args.large_runs,
            rss_check=args.rss_check,
            seed=args.seed,
        )


def make_panel(shape: Shape, nan_fraction: float, seed: int) -> FloatArray:
    """Standard normal signals with ``nan_fraction`` of the values missing at random; the
    same panel for the same arguments."""
    timestamps, assets, signals = shape
    rng = np.random.default_rng(seed)
    panel = np.empty(shape)
    step = max(1, GENERATE_BYTES // max(1, assets * signals * 8))
    for start in range(0, timestamps, step):
        part = panel[start : start + step]
        rng.standard_normal(out=part)
        part[rng.random(part.shape, dtype=np.float32) < nan_fraction] = np.nan
    return panel


def bench_weights(signals: int) -> FloatArray:
    return np.linspace(1.0, 0.25, signals)


def _share(total: int, rounds: int, round_: int) -> int:
    """Round ``round_``'s part of ``total`` calls spread over ``rounds``."""
    return total // rounds + (1 if round_ < total % rounds else 0)


def _timed(call: Callable[[], object]) -> Call:
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    started = time.perf_counter()
    call()
    seconds = time.perf_counter() - started
    return Call(seconds, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)


def measure_small(options: SignalBenchOptions) -> SmallResult:
    panel = make_panel(options.small_shape, options.nan_fraction, options.seed)
    weights = bench_weights(panel.shape[2])

    def production() -> FloatArray:
        return signal_pipeline(panel, weights)

    def reference() -> FloatArray:
        return pipeline_reference(panel, weights)

    produced, expected = production(), reference()  # also the warm-up
    if not np.array_equal(np.isnan(produced), np.isnan(expected)):
        raise RuntimeError("production and reference disagree on which values are NaN")
    difference = float(np.nanmax(np.abs(produced - expected), initial=0.0))

    rounds = max(1, options.reference_runs)
    production_calls: list[Call] = []
    reference_calls: list[Call] = []
    fresh_calls: list[Call] = []
    for round_ in range(rounds):
        reference_calls.append(_timed(reference))
        production_calls.extend(
            _timed(production) for _ in range(_share(options.runs, rounds, round_))
        )
        with _fresh_buffers():  # what reusing the scratch buffers saves, in the same state
            share = _share(options.method_runs, rounds, round_)
            fresh_calls.extend(_timed(production) for _ in range(share))
    methods = {}
    for method in ("symmetric", "sequential"):
        call = functools.partial(signal_pipeline, panel, weights, method)
        call()  # warm-up
        methods[method] = Timing.of(method, [_timed(call) for _ in range(options.method_runs)])
    return SmallResult(
        shape=options.small_shape,
        production=Timing.of("production", production_calls),
        reference=Timing.of("reference", reference_calls),
        symmetric=methods["symmetric"],
        sequential=methods["sequential"],
        fresh_buffers=Timing.of("no reuse", fresh_calls),
        max_abs_difference=difference,
    )


@contextlib.contextmanager
def _fresh_buffers() -> Iterator[None]:
    """The production pipeline with every slab buffer allocated afresh, as plain numpy
    code would: the floor the scratch-buffer reuse in ``signal_math`` is measured against."""
    kept = signal_math.SCRATCH_KEEP_BYTES
    signal_math.SCRATCH_KEEP_BYTES = 0
    try:
        yield
    finally:
        signal_math.SCRATCH_KEEP_BYTES = kept


def measure_large(options: SignalBenchOptions, progress: Callable[[str], None]) -> LargeResult:
    shape = options.large_shape
    rss_peak: int | None = None
    rss_note = "not run"
    if options.rss_check:
        # First, while this process is small: a child's ru_maxrss starts from its parent's
        # peak RSS at the fork (Linux carries it across exec), which would hide the child's.
        progress("large panel: peak RSS in a child process")
        rss_peak, rss_note = _child_rss_beyond_input(shape, options)
    progress(f"large panel {shape}: building the input")
    panel = make_panel(shape, options.nan_fraction, options.seed)
    weights = bench_weights(shape[2])
    wall_s: list[float] = []
    fresh_s: list[float] = []
    for run in range(options.large_runs):
        gc.collect()
        wall_s.append(_timed(lambda: signal_pipeline(panel, weights)).seconds)
        with _fresh_buffers():
            fresh_s.append(_timed(lambda: signal_pipeline(panel, weights)).seconds)
        progress(
            f"large panel: run {run + 1}/{options.large_runs} {wall_s[-1]:.2f} s "
            f"(no buffer reuse {fresh_s[-1]:.2f} s)"
        )
    gc.collect()
    release_scratch_buffers()  # so the traced call allocates (and counts) them again
    tracemalloc.start()
    try:
        signal_pipeline(panel, weights)
        _, traced_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return LargeResult(
        shape=shape,
        input_bytes=panel.nbytes,
        wall_s=wall_s,
        fresh_buffers_s=fresh_s,
        traced_peak_bytes=traced_peak,
        rss_peak_bytes=rss_peak,
        rss_note=rss_note,
    )


def _child_rss_beyond_input(shape: Shape, options: SignalBenchOptions) -> tuple[int | None, str]:
    argv = [sys.executable, "-m", "bench.signals", *map(str, shape)]
    argv += [str(options.nan_fraction), str(options.seed)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return None, f"child failed: {done.stderr.strip()[-300:]}"
    measured = json.loads(done.stdout)
    beyond = 1024 * (measured["peak_kb"] - measured["baseline_kb"])
    return beyond, "ru_maxrss after the call minus ru_maxrss once the input was built"


def _rss_child(argv: list[str]) -> None:
    """In the child: build the input, note the peak RSS, run the pipeline once, note it again."""
    timestamps, assets, signals = (int(a) for a in argv[:3])
    nan_fraction, seed = float(argv[3]), int(argv[4])
    panel = make_panel((timestamps, assets, signals), nan_fraction, seed)
    weights = bench_weights(signals)
    gc.collect()
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    signal_pipeline(panel, weights)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"baseline_kb": baseline, "peak_kb": peak}))


def run_signal_bench(
    options: SignalBenchOptions, progress: Callable[[str], None]
) -> SignalBenchReport:
    report = SignalBenchReport(settings=_settings(options), load_before=os.getloadavg())
    progress(
        f"small panel {options.small_shape}: {options.runs} production, "
        f"{options.reference_runs} reference calls, taking turns"
    )
    report.small = measure_small(options)
    if options.large:
        report.large = measure_large(options, progress)
    report.load_after = os.getloadavg()
    return report


def _settings(options: SignalBenchOptions) -> dict[str, object]:
    return {
        "runs": options.runs,
        "reference_runs": options.reference_runs,
        "method_runs": options.method_runs,
        "large": options.large,
        "large_runs": options.large_runs,
        "seed": options.seed,
        "small_shape": list(options.small_shape),
        "large_shape": list(options.large_shape),
        "nan_fraction": options.nan_fraction,
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
    }


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def command(args: argparse.Namespace) -> int:
    """Entry point of ``python -m bench signals``: run, print the table, write the JSON."""
    options = SignalBenchOptions.from_args(args)
    report = run_signal_bench(options, _progress)
    print(format_table(report), flush=True)
    if args.json is not None:
        report.write_json(args.json)
    return 0


if __name__ == "__main__":
    _rss_child(sys.argv[1:])
