"""An account's exposure as the risk checks see it: what the broker says about an order
(a settlement), the reservations and per-symbol exposure held for the checks, and the
account's risk state as the order log implies it. Plain values, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from app.domain.orders import Side
from app.domain.risk import RiskLimits


@dataclass(frozen=True, slots=True)
class Settlement:
    """What the broker says about one order: its cumulative fill, and whether it has ended.

    Every settlement carries the cumulative quantity, an end included: the end is the
    broker's last word, so no fill can come after it that it does not already count. That
    is what makes settling commutative. Fills, ends and releases may reach Redis in any
    order (the applier's reports, the gateway's cancel acknowledgement) and leave the same
    exposure; an end that said nothing of fills would release a reservation whose fills were
    still on their way, and they would then find nothing to settle against."""

    account: str
    client_order_id: str
    cum_qty: Decimal
    final: bool
    mark: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Reservation:
    client_order_id: str
    symbol: str
    side: Side
    qty: Decimal
    filled: Decimal
    reserved_at_ms: int


@dataclass(frozen=True, slots=True)
class SymbolExposure:
    symbol: str
    position: Decimal
    open_buy: Decimal
    open_sell: Decimal
    mark: Decimal
    worst_case_notional: Decimal


@dataclass(frozen=True, slots=True)
class RiskSnapshot:
    account: str
    built: bool
    limits: RiskLimits | None
    kill_account: bool
    kill_global: bool
    gross_notional: Decimal
    exposure: list[SymbolExposure]
    reservations: list[Reservation]


@dataclass(frozen=True, slots=True)
class AccountImage:
    """An account's risk state as the database knows it, to (re)build Redis from."""

    limits: RiskLimits
    kill_account: tuple[bool, int]  # (active, generation)
    kill_global: tuple[bool, int]
    positions: dict[str, Decimal]
    marks: dict[str, Decimal]
    # (client_order_id, symbol, side, qty, filled) of every order still open
    reservations: list[tuple[str, str, Side, Decimal, Decimal]]
