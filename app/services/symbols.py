"""The symbols this gateway trades: each one's decimals and its reference price now."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from app.domain.errors import UnknownSymbol
from app.domain.instruments import Instrument
from app.services.prices import ReferencePrices


@dataclass(frozen=True, slots=True)
class SymbolQuote:
    instrument: Instrument
    reference_price: Decimal | None  # the last trade, else the configured price


class SymbolCatalog:
    def __init__(self, instruments: dict[str, Instrument], prices: ReferencePrices) -> None:
        self._instruments = instruments
        self._prices = prices

    def get(self, symbol: str) -> Instrument:
        """The symbol's instrument; ``UnknownSymbol`` if it is not traded here."""
        instrument = self._instruments.get(symbol)
        if instrument is None:
            raise UnknownSymbol(f"symbol {symbol!r} is not tradable here")
        return instrument

    def quotes(self) -> list[SymbolQuote]:
        return [
            SymbolQuote(self._instruments[s], self._prices.get(s))
            for s in sorted(self._instruments)
        ]
