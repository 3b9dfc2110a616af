"""The raw signals per asset, from its recent 1-minute bars: the set the signal worker
computes before z-scoring, orthogonalizing and weighting them.

Inputs are windows of shape (W, N): W bars, oldest first, N assets, NaN where an asset had
no bar that minute. The last row of ``closes`` is each asset's last trade (the forming
minute); ``volumes`` has completed bars only. A signal whose window is not complete for an
asset is NaN for it (the z-score then leaves that asset out of that signal).

| name                      | value                                                  |
|---------------------------|--------------------------------------------------------|
| ``momentum_L``            | log(price now / close L bars ago)                      |
| ``reversal_L``            | -log(price now / close L bars ago) (short-term)        |
| ``volatility_L``          | standard deviation (ddof=1) of the last L 1-bar log returns |
| ``volume_trend_S_L``      | log(mean volume of the last S bars / of the last L)    |
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Panel = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class SignalSet:
    momentum_lookbacks: tuple[int, ...]
    reversal_lookback: int
    volatility_lookback: int
    volume_lookbacks: tuple[int, int]

    @property
    def names(self) -> list[str]:
        short, long = self.volume_lookbacks
        return [
            *(f"momentum_{n}" for n in self.momentum_lookbacks),
            f"reversal_{self.reversal_lookback}",
            f"volatility_{self.volatility_lookback}",
            f"volume_trend_{short}_{long}",
        ]

    @property
    def window(self) -> int:
        """Rows of ``closes`` needed: the longest lookback's bars and the price now."""
        return (
            max(
                *self.momentum_lookbacks,
                self.reversal_lookback,
                self.volatility_lookback,
                self.volume_lookbacks[1],
            )
            + 1
        )


def raw_signals(signals: SignalSet, closes: Panel, volumes: Panel) -> Panel:
    """(N, K): each asset's raw signals in ``signals.names`` order. ``closes`` (W, N) ends
    with the price now; ``volumes`` (W - 1, N) are the completed bars'."""
    if closes.ndim != 2 or volumes.shape != (closes.shape[0] - 1, closes.shape[1]):
        raise ValueError("closes (W, N) and volumes (W - 1, N)")
    if closes.shape[0] < signals.window:
        raise ValueError(f"{signals.window} rows of closes needed, got {closes.shape[0]}")
    with np.errstate(divide="ignore", invalid="ignore"):
        log_prices = np.log(closes)
        now = log_prices[-1]
        columns = [now - log_prices[-1 - n] for n in signals.momentum_lookbacks]
        columns.append(log_prices[-1 - signals.reversal_lookback] - now)
        returns = np.diff(log_prices[-1 - signals.volatility_lookback :], axis=0)
        columns.append(returns.std(axis=0, ddof=1))  # NaN anywhere in the window: NaN
        short, long = signals.volume_lookbacks
        columns.append(np.log(volumes[-short:].mean(axis=0) / volumes[-long:].mean(axis=0)))
    out = np.column_stack(columns).astype(np.float64)
    out[~np.isfinite(out)] = np.nan  # a zero volume or price: no signal, not an infinity
    return out
