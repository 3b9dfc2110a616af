"""Market data's rules: what a valid tick is, and how ticks make 1-minute bars.

A tick is one trade: symbol, price, size and the time it happened (the feed's clock, in
microseconds since the epoch). A tick that fails a check is not used: it goes to the
dead-letter stream with a ``DeadLetterReason``, and is counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from enum import StrEnum

from app.domain.instruments import decimal_places
from app.domain.orders import MAX_PRICE, MAX_QTY, QTY_DECIMALS

BAR_US = 60_000_000  # a bar is one minute of the feed's clock
MAX_FIELD_CHARS = 64  # a price or size longer than this is no number a feed sends


class DeadLetterReason(StrEnum):
    MALFORMED = "malformed"  # a field missing or not a number
    PRICE_NOT_FINITE = "price_not_finite"  # NaN or infinite
    PRICE_NOT_POSITIVE = "price_not_positive"
    PRICE_OUT_OF_RANGE = "price_out_of_range"  # above an order's maximum, or finer than the tick
    SIZE_NOT_FINITE = "size_not_finite"
    SIZE_NEGATIVE = "size_negative"
    SIZE_OUT_OF_RANGE = "size_out_of_range"  # above an order's maximum quantity
    UNKNOWN_SYMBOL = "unknown_symbol"
    TIME_OUT_OF_RANGE = "time_out_of_range"  # before 1970 or after 2999
    TIME_BACKWARDS = "time_backwards"  # earlier than the symbol's last tick


# A last trade becomes the reference price that orders are checked and filled at: it must be
# a price an order could have (MAX_PRICE, the symbol's decimals), and a size an order's.
MAX_TICK_PRICE = MAX_PRICE
MAX_TICK_SIZE = MAX_QTY
MAX_TS_US = 32_503_680_000_000_000  # 3000-01-01


@dataclass(frozen=True, slots=True)
class Tick:
    symbol: str
    price: Decimal
    size: Decimal
    ts_us: int  # when it traded, by the feed's clock
    received_ns: int  # when the gateway took it in (wall clock): for latency


@dataclass(frozen=True, slots=True)
class RawTick:
    """A tick as it arrived, every field still text: checked by ``check_tick``."""

    symbol: str
    price: str
    size: str
    ts_us: str
    received_ns: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    tick: RawTick
    reason: DeadLetterReason
    detail: str


def check_tick(
    raw: RawTick, price_decimals: Mapping[str, int], last_ts_us: int | None
) -> Tick | DeadLetter:
    """The tick, or why it cannot be used. ``price_decimals``: each traded symbol's.
    ``last_ts_us``: the symbol's last good tick's time; a tick at the same time is fine
    (several trades in a microsecond), an earlier one is not."""
    if len(raw.price) > MAX_FIELD_CHARS or len(raw.size) > MAX_FIELD_CHARS:
        return DeadLetter(raw, DeadLetterReason.MALFORMED, "price or size too long to be one")
    try:
        price, size, ts_us = Decimal(raw.price), Decimal(raw.size), int(raw.ts_us)
    except (InvalidOperation, ValueError):
        return DeadLetter(raw, DeadLetterReason.MALFORMED, "price, size or time is not a number")
    places = price_decimals.get(raw.symbol)
    if places is None:
        return DeadLetter(raw, DeadLetterReason.UNKNOWN_SYMBOL, f"{raw.symbol!r} is not traded")
    if not price.is_finite():
        return DeadLetter(raw, DeadLetterReason.PRICE_NOT_FINITE, f"price {raw.price}")
    if price <= 0:
        return DeadLetter(raw, DeadLetterReason.PRICE_NOT_POSITIVE, f"price {raw.price}")
    if price > MAX_TICK_PRICE or decimal_places(price) > places:
        detail = f"price {raw.price}: at most {MAX_TICK_PRICE}, {places} decimal places"
        return DeadLetter(raw, DeadLetterReason.PRICE_OUT_OF_RANGE, detail)
    if not size.is_finite():
        return DeadLetter(raw, DeadLetterReason.SIZE_NOT_FINITE, f"size {raw.size}")
    if size < 0:
        return DeadLetter(raw, DeadLetterReason.SIZE_NEGATIVE, f"size {raw.size}")
    if size > MAX_TICK_SIZE or decimal_places(size) > QTY_DECIMALS:
        detail = f"size {raw.size}: at most {MAX_TICK_SIZE}, {QTY_DECIMALS} decimal places"
        return DeadLetter(raw, DeadLetterReason.SIZE_OUT_OF_RANGE, detail)
    if not 0 <= ts_us < MAX_TS_US:
        return DeadLetter(raw, DeadLetterReason.TIME_OUT_OF_RANGE, f"at {raw.ts_us} us")
    if last_ts_us is not None and ts_us < last_ts_us:
        return DeadLetter(
            raw, DeadLetterReason.TIME_BACKWARDS, f"at {ts_us} us, after a tick at {last_ts_us}"
        )
    return Tick(raw.symbol, price, size, ts_us, raw.received_ns)


@dataclass(frozen=True, slots=True)
class Bar:
    """One symbol's trades in one minute of the feed's clock."""

    symbol: str
    start_us: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    trades: int


def bar_start(ts_us: int) -> int:
    return ts_us - ts_us % BAR_US


def add_to_bar(bar: Bar | None, tick: Tick) -> tuple[Bar, Bar | None]:
    """The symbol's bar with ``tick`` in it, and the bar it completed (the tick is in a
    later minute), if any. Ticks come in time order per symbol (``check_tick``)."""
    start = bar_start(tick.ts_us)
    if bar is None or start > bar.start_us:
        fresh = Bar(
            tick.symbol, start, tick.price, tick.price, tick.price, tick.price, tick.size, 1
        )
        return fresh, bar
    price = tick.price
    updated = Bar(
        bar.symbol,
        bar.start_us,
        bar.open,
        price if price > bar.high else bar.high,
        price if price < bar.low else bar.low,
        price,
        bar.volume + tick.size,
        bar.trades + 1,
    )
    return updated, None


@dataclass(slots=True)
class SymbolState:
    """What the processor keeps of a symbol: its last good tick's time, its forming bar."""

    last_ts_us: int
    bar: Bar


@dataclass(slots=True)
class ProcessedBatch:
    """What a batch of raw ticks came to: committed at once, with the cursor after it."""

    cursor: str
    ticks: list[Tick] = field(default_factory=list)
    completed: list[Bar] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    changed: dict[str, SymbolState] = field(default_factory=dict)


def process_batch(
    symbols: dict[str, SymbolState],
    raws: Iterable[tuple[str, RawTick]],
    known: Mapping[str, int],
) -> ProcessedBatch:
    """Check each raw tick against its symbol's state, fold the good ones into bars.
    ``symbols`` is not changed: the batch's ``changed`` holds the new states (applied by
    the caller once the batch is committed). ``known``: each traded symbol's price
    decimals."""
    batch = ProcessedBatch(cursor="")
    for entry_id, raw in raws:
        batch.cursor = entry_id
        state = batch.changed.get(raw.symbol) or symbols.get(raw.symbol)
        checked = check_tick(raw, known, None if state is None else state.last_ts_us)
        if isinstance(checked, DeadLetter):
            batch.dead.append(checked)
            continue
        try:
            bar, completed = add_to_bar(None if state is None else state.bar, checked)
        except ArithmeticError as exc:  # a volume past the decimal context: not this tick's bar
            batch.dead.append(DeadLetter(raw, DeadLetterReason.SIZE_OUT_OF_RANGE, repr(exc)))
            continue
        batch.changed[raw.symbol] = SymbolState(checked.ts_us, bar)
        batch.ticks.append(checked)
        if completed is not None:
            batch.completed.append(completed)
    return batch
