"""Market data's pure rules: tick checks, bars, batches, the simulated feed, raw signals."""

from __future__ import annotations

import itertools
import math
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.marketdata import (
    BAR_US,
    DeadLetter,
    DeadLetterReason,
    RawTick,
    SymbolState,
    Tick,
    check_tick,
    process_batch,
)
from app.domain.raw_signals import SignalSet, raw_signals
from app.feeds.csv_replay import timestamp_us
from app.feeds.simulated import GbmPaths

KNOWN = {"AAPL": 2, "MSFT": 2}  # traded symbols, their price decimals
T0 = 1_772_461_800_000_000  # a minute's start


def raw(symbol: str = "AAPL", price: str = "10", size: str = "1", ts: int = T0) -> RawTick:
    return RawTick(symbol, price, size, str(ts), 0)


@pytest.mark.parametrize(
    ("tick", "reason"),
    [
        (raw(price="abc"), DeadLetterReason.MALFORMED),
        (RawTick("AAPL", "1", "1", "", 0), DeadLetterReason.MALFORMED),
        (raw(symbol="ZZZ"), DeadLetterReason.UNKNOWN_SYMBOL),
        (raw(price="NaN"), DeadLetterReason.PRICE_NOT_FINITE),
        (raw(price="-Infinity"), DeadLetterReason.PRICE_NOT_FINITE),
        (raw(price="0"), DeadLetterReason.PRICE_NOT_POSITIVE),
        (raw(price="-0.01"), DeadLetterReason.PRICE_NOT_POSITIVE),
        (raw(size="sNaN"), DeadLetterReason.SIZE_NOT_FINITE),
        (raw(size="-1"), DeadLetterReason.SIZE_NEGATIVE),
        (raw(price="1e400"), DeadLetterReason.PRICE_OUT_OF_RANGE),
        (raw(price="1000000000.01"), DeadLetterReason.PRICE_OUT_OF_RANGE),
        (raw(price="1e-400"), DeadLetterReason.PRICE_OUT_OF_RANGE),
        (raw(price="10.001"), DeadLetterReason.PRICE_OUT_OF_RANGE),  # finer than the cent
        (raw(size="9e999999"), DeadLetterReason.SIZE_OUT_OF_RANGE),
        (raw(size="0.0000001"), DeadLetterReason.SIZE_OUT_OF_RANGE),
        (raw(price="1" * 65), DeadLetterReason.MALFORMED),
        (raw(ts=-1), DeadLetterReason.TIME_OUT_OF_RANGE),
        (raw(ts=253_402_300_800_000_000), DeadLetterReason.TIME_OUT_OF_RANGE),  # year 9999
        (raw(ts=T0 - 1), DeadLetterReason.TIME_BACKWARDS),
    ],
)
def test_a_bad_tick_is_a_dead_letter_naming_its_reason(
    tick: RawTick, reason: DeadLetterReason
) -> None:
    checked = check_tick(tick, KNOWN, last_ts_us=T0)
    assert isinstance(checked, DeadLetter)
    assert checked.reason is reason
    assert checked.tick is tick


def test_a_tick_at_the_same_microsecond_as_the_last_and_a_zero_size_are_good() -> None:
    checked = check_tick(raw(price="10.5", size="0"), KNOWN, last_ts_us=T0)
    assert checked == Tick("AAPL", Decimal("10.5"), Decimal(0), T0, 0)


def test_ticks_make_one_minute_bars_and_a_later_minute_completes_the_bar() -> None:
    ticks = [
        ("1", raw(price="10", size="5", ts=T0 + 1)),
        ("2", raw(price="12", size="1", ts=T0 + 2)),
        ("3", raw(price="9", size="2", ts=T0 + BAR_US - 1)),
        ("4", raw(price="11", size="4", ts=T0 + BAR_US)),
    ]
    batch = process_batch({}, ticks, KNOWN)
    [bar] = batch.completed
    assert (bar.start_us, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.trades) == (
        T0, 10, 12, 9, 9, 8, 3,
    )  # fmt: skip
    forming = batch.changed["AAPL"].bar
    assert (forming.start_us, forming.open, forming.volume, forming.trades) == (
        T0 + BAR_US,
        11,
        4,
        1,
    )
    assert batch.cursor == "4"


def test_a_batch_leaves_the_states_it_was_given_unchanged() -> None:
    before = process_batch({}, [("1", raw())], KNOWN).changed
    snapshot = dict(before)
    process_batch(before, [("2", raw(price="11", ts=T0 + BAR_US))], KNOWN)
    assert before == snapshot


tick_streams = st.lists(
    st.tuples(
        st.sampled_from(["AAPL", "MSFT", "ZZZ"]),
        st.sampled_from(["10", "10.5", "0", "-1", "NaN", "x", "11.25", "1e400", "10.001"]),
        st.sampled_from(["1", "0", "-2", "3", "9e999999"]),
        st.integers(-BAR_US, 4 * BAR_US),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(ticks=tick_streams, cuts=st.lists(st.integers(0, 60), max_size=6))
def test_processing_in_any_batches_comes_to_what_one_batch_does(
    ticks: list[tuple[str, str, str, int]], cuts: list[int]
) -> None:
    """A processor restarted between any two ticks (state carried over, as the commit
    stores it) ends where one pass over all of them ends."""
    raws = [(str(i), raw(s, p, q, T0 + t)) for i, (s, p, q, t) in enumerate(ticks)]
    whole = process_batch({}, raws, KNOWN)

    states: dict[str, SymbolState] = {}
    good, completed, dead = [], [], []
    bounds = sorted({0, len(raws), *(c for c in cuts if c <= len(raws))})
    for start, end in itertools.pairwise(bounds):
        part = process_batch(states, raws[start:end], KNOWN)
        states = {**states, **part.changed}
        good += part.ticks
        completed += part.completed
        dead += part.dead
    assert good == whole.ticks
    assert completed == whole.completed
    assert dead == whole.dead
    assert states == whole.changed


def test_the_simulated_feed_is_the_same_for_a_seed_and_keeps_its_clock() -> None:
    def rounds(seed: int) -> list[list[RawTick]]:
        paths = GbmPaths(
            {"AAPL": Decimal("230"), "MSFT": Decimal("420")},
            drift=0.05, volatility=0.3, round_s=30, seed=seed, start_us=T0,
        )  # fmt: skip
        return [paths.next_round(received_ns=0) for _ in range(50)]

    first, again, other = rounds(7), rounds(7), rounds(8)
    assert first == again
    assert first != other
    for n, ticks in enumerate(first, start=1):
        assert [t.symbol for t in ticks] == ["AAPL", "MSFT"]
        assert {t.ts_us for t in ticks} == {str(T0 + n * 30_000_000)}
        for t in ticks:
            price = Decimal(t.price)
            assert price > 0
            assert price == price.quantize(Decimal("0.01"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-02T14:30:00Z", T0),
        ("2026-03-02T15:30:00.5+01:00", T0 + 500_000),
        ("1772461800.25", T0 + 250_000),
        ("2026-03-02T14:30:00", None),  # no zone: not guessed
        ("yesterday", None),
    ],
)
def test_csv_timestamps(text: str, expected: int | None) -> None:
    assert timestamp_us(text) == expected


SIGNALS = SignalSet(
    momentum_lookbacks=(2,), reversal_lookback=1, volatility_lookback=3, volume_lookbacks=(1, 2)
)


def test_raw_signals_by_hand() -> None:
    assert SIGNALS.names == ["momentum_2", "reversal_1", "volatility_3", "volume_trend_1_2"]
    assert SIGNALS.window == 4
    closes = np.array([[100.0, 50.0], [101.0, 50.0], [102.0, 49.0], [104.0, 51.0]])
    volumes = np.array([[10.0, 5.0], [20.0, 5.0], [30.0, 0.0]])
    out = raw_signals(SIGNALS, closes, volumes)
    assert out[0, 0] == pytest.approx(math.log(104 / 101))
    assert out[0, 1] == pytest.approx(-math.log(104 / 102))
    returns = np.diff(np.log(closes[:, 0]))
    assert out[0, 2] == pytest.approx(np.std(returns, ddof=1))
    assert out[0, 3] == pytest.approx(math.log(30 / 25))
    assert math.isnan(out[1, 3])  # a zero volume: no signal, not an infinity
    assert np.isfinite(out[1, :3]).all()


def test_an_asset_without_the_history_has_nan_for_the_signals_that_need_it() -> None:
    closes = np.array([[np.nan, 50.0], [101.0, 50.0], [102.0, 49.0], [104.0, 51.0]])
    volumes = np.array([[10.0, 5.0], [20.0, 5.0], [30.0, 6.0]])
    out = raw_signals(SIGNALS, closes, volumes)
    assert np.isfinite(out[0, [0, 1, 3]]).all()
    assert math.isnan(out[0, 2])  # volatility_3 needs 4 closes
    assert np.isfinite(out[1]).all()


def test_raw_signals_refuse_windows_of_the_wrong_shape() -> None:
    with pytest.raises(ValueError, match="rows of closes"):
        raw_signals(SIGNALS, np.ones((3, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="volumes"):
        raw_signals(SIGNALS, np.ones((4, 2)), np.ones((4, 2)))
