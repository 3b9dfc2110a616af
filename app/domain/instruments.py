"""What can be traded here, and how finely: a symbol's price and quantity decimals."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from app.domain.errors import InvalidOrder
from app.domain.orders import OrderIntent


@dataclass(frozen=True, slots=True)
class Instrument:
    symbol: str
    price_decimals: int  # the tick: 2 is a cent
    qty_decimals: int  # 0: whole shares only


def decimal_places(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def check_precision(intent: OrderIntent, instrument: Instrument) -> None:
    """Refuse a quantity or price finer than the symbol allows (no rounding: the order is
    the client's, to the last digit), naming the field."""
    _check_places("qty", intent.qty, instrument.qty_decimals, instrument.symbol)
    if intent.limit_price is not None:
        _check_places("limit_price", intent.limit_price, instrument.price_decimals, intent.symbol)


def check_price(name: str, price: Decimal, instrument: Instrument) -> None:
    """Refuse a price finer than the symbol's tick (a reference price, say), naming it."""
    _check_places(name, price, instrument.price_decimals, instrument.symbol)


def _check_places(name: str, value: Decimal, allowed: int, symbol: str) -> None:
    if decimal_places(value) > allowed:
        message = f"{symbol} allows {allowed} decimal places in {name}"
        raise InvalidOrder(
            f"{name} {value} is finer than {message}",
            errors=[{"loc": ["body", name], "msg": message, "type": "decimal_places"}],
        )
