"""The reference loop the signal tests compare against. It lives with the benchmark that
times it (``bench/signal_reference.py``), so both check the same definition."""

from __future__ import annotations

from bench.signal_reference import pipeline_reference, residual_reference

__all__ = ["pipeline_reference", "residual_reference"]
