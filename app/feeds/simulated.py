"""A simulated feed: geometric Brownian motion per symbol, one tick per symbol per round.

Each round is one timestamp of the feed's clock for every symbol (a cross-section, as the
signal worker wants it). The feed's clock runs ``time_scale`` times the wall clock, so
1-minute bars can complete in a second. Deterministic for a seed: the same prices, sizes
and timestamps (from ``start_us``) every run.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal

import numpy as np

from app.domain.marketdata import RawTick

SECONDS_PER_YEAR = 252 * 6.5 * 3600  # trading time: drift and volatility are annual


class GbmPaths:
    """The prices, sizes and times of successive rounds, for ``symbols`` from ``start``."""

    def __init__(
        self,
        start: dict[str, Decimal],
        *,
        drift: float,
        volatility: float,
        round_s: float,
        seed: int,
        start_us: int,
        price_decimals: int = 2,
    ) -> None:
        self.symbols = list(start)
        self._log_price = np.log(np.array([float(start[s]) for s in self.symbols]))
        dt = round_s / SECONDS_PER_YEAR
        self._step_mean = (drift - volatility**2 / 2) * dt
        self._step_sd = volatility * math.sqrt(dt)
        self._round_us = round(round_s * 1_000_000)
        self._rng = np.random.default_rng(seed)
        self._ts_us = start_us
        self._quantum = Decimal(1).scaleb(-price_decimals)

    def next_round(self, received_ns: int) -> list[RawTick]:
        shocks = self._rng.standard_normal(len(self.symbols))
        self._log_price += self._step_mean + self._step_sd * shocks
        sizes = self._rng.integers(1, 1000, len(self.symbols))
        self._ts_us += self._round_us
        ts = str(self._ts_us)
        return [
            RawTick(
                symbol,
                str(Decimal(math.exp(lp)).quantize(self._quantum)),
                str(int(size)),
                ts,
                received_ns,
            )
            for symbol, lp, size in zip(self.symbols, self._log_price, sizes, strict=True)
        ]


async def run_simulated_feed(
    paths: GbmPaths,
    rounds_per_s: float,
    append: Callable[[list[RawTick]], Awaitable[None]],
) -> None:
    """Emit a round every ``1 / rounds_per_s`` wall seconds, on schedule (a late round
    does not shift the ones after it), until cancelled."""
    period = 1 / rounds_per_s
    due = time.monotonic()
    while True:
        due += period
        await append(paths.next_round(time.time_ns()))
        await asyncio.sleep(max(0.0, due - time.monotonic()))
