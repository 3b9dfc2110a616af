"""The target-weight strategy's rules: targets from the composite, trades from positions."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from app.domain.orders import Side
from app.domain.strategy import TargetWeights, Trade, rebalance, target_positions

POLICY = TargetWeights(Decimal(60_000), names_per_side=2, min_trade_notional=Decimal(500))
PRICES = {
    s: Decimal(p) for s, p in {"A": "100", "B": "50", "C": "200", "D": "10", "E": "30"}.items()
}


def test_long_the_highest_short_the_lowest_equal_notional_whole_shares() -> None:
    composite: dict[str, float | None] = {"A": 1.5, "B": -0.2, "C": 0.9, "D": -1.1, "E": 0.1}
    targets = target_positions(POLICY, composite, PRICES)
    # 60,000 gross over 4 names: 15,000 each, rounded down to whole shares.
    assert targets == {"A": 150, "C": 75, "D": -1500, "B": -300}


def test_symbols_without_a_composite_or_a_price_are_not_held() -> None:
    composite: dict[str, float | None] = {
        "A": 1.0,
        "B": None,
        "C": float("nan"),
        "Z": 5.0,
        "D": -1.0,
    }
    targets = target_positions(POLICY, composite, PRICES)
    assert targets == {"A": 300, "D": -3000}  # one name a side (two usable): 30,000 each


def test_too_few_symbols_hold_nothing() -> None:
    assert target_positions(POLICY, {"A": 1.0}, PRICES) == {}


def test_trades_are_the_differences_worth_the_minimum_and_close_what_is_no_longer_held() -> None:
    targets = {"A": Decimal(150), "D": Decimal(-1500)}
    held = {"A": Decimal(148), "D": Decimal(-1000), "B": Decimal(20)}
    trades = rebalance(POLICY, targets, held, PRICES)
    # A: 2 x 100 = 200 < 500 waits; D: sell 500 (5,000); B: 20 x 50 = 1,000, closed.
    assert trades == [Trade("B", Side.SELL, Decimal(20)), Trade("D", Side.SELL, Decimal(500))]


@given(
    composite=st.dictionaries(
        st.sampled_from(sorted(PRICES)),
        st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    ),
    held=st.dictionaries(st.sampled_from(sorted(PRICES)), st.integers(-5000, 5000).map(Decimal)),
)
def test_after_the_trades_every_position_is_its_target_within_the_minimum(
    composite: dict[str, float | None], held: dict[str, Decimal]
) -> None:
    targets = target_positions(POLICY, composite, PRICES)
    longs = [s for s, q in targets.items() if q > 0]
    shorts = [s for s, q in targets.items() if q < 0]
    assert len(longs) == len(shorts) <= POLICY.names_per_side
    gross = sum(abs(q) * PRICES[s] for s, q in targets.items())
    assert gross <= POLICY.gross_notional
    after = dict(held)
    for trade in rebalance(POLICY, targets, held, PRICES):
        signed = trade.qty if trade.side is Side.BUY else -trade.qty
        after[trade.symbol] = after.get(trade.symbol, Decimal(0)) + signed
    for symbol in set(after) | set(targets):
        miss = abs(after.get(symbol, Decimal(0)) - targets.get(symbol, Decimal(0)))
        assert miss * PRICES[symbol] < POLICY.min_trade_notional
