"""Does the risk state in Redis agree with the order log? Per account: each symbol's
position and open quantities, and which orders hold reservations with how much filled.

The order log is the source of truth; Redis is its fast copy. A difference that lasts
means a fill, a release or a reservation went missing on one side (``ordergate reconcile
--check`` prints them). A moment's difference is normal under traffic: an order reserved
but not yet written, a fill settled in Redis just before the applier commits it. So an
account that differs is compared again, and only a difference that stays the same (the
same order held differently, or the same amount apart) is reported.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from app.domain.exposure import AccountImage, RiskSnapshot
from app.domain.orders import Side
from app.services.risk import RiskService
from app.storage.redis.risk_state import RiskStore

RECHECKS = 3
RECHECK_PAUSE_S = 0.5


@dataclass(frozen=True, slots=True)
class Difference:
    """One value the two sides disagree on (``redis`` / ``order_log``: as each holds it)."""

    account: str
    subject: str  # a symbol, or an order's client_order_id
    field: str
    redis: str
    order_log: str
    drift: str  # what stays the same while it lasts: the amount apart, or both views

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.account, self.subject, self.field, self.drift)


@dataclass(frozen=True, slots=True)
class AuditResult:
    accounts: list[str]  # compared
    not_loaded: list[str]  # not in Redis now: rebuilt from the order log on next use
    differences: list[Difference]


def compare(account: str, implied: AccountImage, held: RiskSnapshot) -> list[Difference]:
    """What ``held`` (Redis) has that ``implied`` (the order log) does not, and the reverse."""
    found: list[Difference] = []
    expected = _exposure(implied)
    actual = {e.symbol: (e.position, e.open_buy, e.open_sell) for e in held.exposure}
    zero = (Decimal(0), Decimal(0), Decimal(0))
    for symbol in sorted(set(expected) | set(actual)):
        mine, theirs = actual.get(symbol, zero), expected.get(symbol, zero)
        for name, redis_value, log_value in zip(
            ("position", "open_buy", "open_sell"), mine, theirs, strict=True
        ):
            if redis_value != log_value:
                drift = _fmt(redis_value - log_value)
                found.append(
                    Difference(account, symbol, name, _fmt(redis_value), _fmt(log_value), drift)
                )
    reserved = {r.client_order_id: (r.symbol, r.side, r.qty, r.filled) for r in held.reservations}
    open_orders = {coid: (s, side, q, f) for coid, s, side, q, f in implied.reservations}
    for coid in sorted(set(reserved) | set(open_orders)):
        mine_r, theirs_r = reserved.get(coid), open_orders.get(coid)
        if mine_r != theirs_r:
            in_redis, in_log = _order(mine_r), _order(theirs_r)
            drift = f"{in_redis} / {in_log}"
            found.append(Difference(account, coid, "reservation", in_redis, in_log, drift))
    return found


def _exposure(image: AccountImage) -> dict[str, tuple[Decimal, Decimal, Decimal]]:
    """Per symbol: (position, open buys, open sells) as the order log implies them."""
    exposure: dict[str, tuple[Decimal, Decimal, Decimal]] = {
        symbol: (qty, Decimal(0), Decimal(0)) for symbol, qty in image.positions.items()
    }
    for _coid, symbol, side, qty, filled in image.reservations:
        position, buys, sells = exposure.get(symbol, (Decimal(0), Decimal(0), Decimal(0)))
        if side is Side.BUY:
            buys += qty - filled
        else:
            sells += qty - filled
        exposure[symbol] = (position, buys, sells)
    return {s: e for s, e in exposure.items() if any(e)}


def _fmt(value: Decimal) -> str:
    return f"{value.normalize():f}"


def _order(held: tuple[str, Side, Decimal, Decimal] | None) -> str:
    if held is None:
        return "none"
    symbol, side, qty, filled = held
    return f"{side.value} {_fmt(qty)} {symbol}, {_fmt(filled)} filled"


class RiskAudit:
    def __init__(self, *, risk: RiskService, store: RiskStore) -> None:
        self._risk = risk
        self._store = store

    async def check(self, accounts: Iterable[str]) -> AuditResult:
        """Compare each account; one that differs is compared again (``RECHECKS`` times,
        ``RECHECK_PAUSE_S`` apart), and a difference is reported only if every comparison
        found it the same."""
        compared = sorted(set(accounts))
        not_loaded: list[str] = []
        lasting: dict[tuple[str, str, str, str], Difference] = {}
        for account in compared:
            held = await self._store.snapshot(account)
            if not held.built:
                not_loaded.append(account)
                continue
            lasting |= {d.key: d for d in compare(account, await self._risk.image(account), held)}
        for _ in range(RECHECKS):
            if not lasting:
                break
            await asyncio.sleep(RECHECK_PAUSE_S)
            again: dict[tuple[str, str, str, str], Difference] = {}
            for account in sorted({key[0] for key in lasting}):
                implied = await self._risk.image(account)
                again |= {
                    d.key: d for d in compare(account, implied, await self._store.snapshot(account))
                }
            lasting = {key: again[key] for key in lasting if key in again}
        return AuditResult(compared, not_loaded, [lasting[key] for key in sorted(lasting)])
