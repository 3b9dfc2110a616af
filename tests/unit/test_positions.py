"""Average-cost position accounting."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from app.domain.orders import Position, Side, apply_fill_to_position

FLAT = Position("a", "AAPL", Decimal(0), Decimal(0), Decimal(0))
D = Decimal


def test_buys_average_in_and_a_sale_realises_pnl() -> None:
    p = apply_fill_to_position(FLAT, Side.BUY, D(10), D(100))
    p = apply_fill_to_position(p, Side.BUY, D(10), D(110))
    assert (p.qty, p.avg_price) == (D(20), D(105))
    p = apply_fill_to_position(p, Side.SELL, D(5), D(120))
    assert (p.qty, p.avg_price, p.realized_pnl) == (D(15), D(105), D(75))


def test_flipping_through_zero_resets_the_average_to_the_fill_price() -> None:
    p = apply_fill_to_position(FLAT, Side.BUY, D(10), D(100))
    p = apply_fill_to_position(p, Side.SELL, D(15), D(90))
    assert (p.qty, p.avg_price, p.realized_pnl) == (D(-5), D(90), D(-100))


fills = st.lists(
    st.tuples(
        st.sampled_from([Side.BUY, Side.SELL]),
        st.integers(1, 1000).map(Decimal),
        st.integers(1, 100_000).map(lambda c: Decimal(c) / 100),
    ),
    max_size=40,
)


@given(fills)
def test_quantity_is_the_signed_sum_and_flat_means_no_average(
    sequence: list[tuple[Side, Decimal, Decimal]],
) -> None:
    p = FLAT
    for side, qty, price in sequence:
        p = apply_fill_to_position(p, side, qty, price)
    assert p.qty == sum((q if s is Side.BUY else -q for s, q, _ in sequence), D(0))
    if p.qty == 0:
        assert p.avg_price == 0


@given(fills)
def test_round_trip_at_one_price_realises_nothing(
    sequence: list[tuple[Side, Decimal, Decimal]],
) -> None:
    p = FLAT
    for side, qty, _ in sequence:
        p = apply_fill_to_position(p, side, qty, D(50))
    assert p.realized_pnl == 0
