"""A target-weight strategy on the composite signal: long the highest, short the lowest.

Each rebalance holds ``names_per_side`` longs and as many shorts, equal weight, the gross
(long plus short) notional at ``gross_notional``; a symbol without a composite (too little
history) or a reference price is not held. Orders are the differences between the targets
and the positions held, in whole quantities at the symbol's quantity decimals; a
difference worth less than ``min_trade_notional`` waits for a larger one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

from app.domain.orders import Side


@dataclass(frozen=True, slots=True)
class TargetWeights:
    gross_notional: Decimal
    names_per_side: int
    min_trade_notional: Decimal


@dataclass(frozen=True, slots=True)
class Trade:
    symbol: str
    side: Side
    qty: Decimal


def target_positions(
    policy: TargetWeights,
    composite: dict[str, float | None],
    prices: dict[str, Decimal],
    qty_places: int = 0,
) -> dict[str, Decimal]:
    """Each traded symbol's target quantity (signed); every other symbol's target is 0."""
    ranked = sorted(
        (value, symbol)
        for symbol, value in composite.items()
        if value is not None and math.isfinite(value) and prices.get(symbol)
    )
    n = min(policy.names_per_side, len(ranked) // 2)
    if n == 0:
        return {}
    per_name = policy.gross_notional / (2 * n)
    step = Decimal(1).scaleb(-qty_places)
    targets: dict[str, Decimal] = {}
    for _, symbol in ranked[-n:]:
        targets[symbol] = (per_name / prices[symbol]).quantize(step, rounding=ROUND_DOWN)
    for _, symbol in ranked[:n]:
        targets[symbol] = -(per_name / prices[symbol]).quantize(step, rounding=ROUND_DOWN)
    return targets


def rebalance(
    policy: TargetWeights,
    targets: dict[str, Decimal],
    positions: dict[str, Decimal],
    prices: dict[str, Decimal],
) -> list[Trade]:
    """The trades from ``positions`` to ``targets`` worth at least the minimum."""
    trades = []
    for symbol in sorted(set(targets) | set(positions)):
        delta = targets.get(symbol, Decimal(0)) - positions.get(symbol, Decimal(0))
        price = prices.get(symbol)
        if delta == 0 or price is None or abs(delta) * price < policy.min_trade_notional:
            continue
        trades.append(Trade(symbol, Side.BUY if delta > 0 else Side.SELL, abs(delta)))
    return trades
