"""Pre-trade risk reservations against a real redis-server, through ``RiskStore`` and its Lua
scripts: a hypothesis state machine reserves, fills, cancels, rejects, replays, rebuilds and
changes limits and kill switches, and after every step compares Redis with a plain-Python
model of the account (positions, open orders, the checks in the order the Lua makes them).
What the broker does to an order reaches Redis by two ways, in any interleaving: its reports,
in order, through the applier, and the gateway's release when a cancel or a reject is
acknowledged; once both have been delivered, Redis holds exactly what the broker did.
A few example tests cover what the machine rarely reaches."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field, replace
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.domain.exposure import AccountImage, RiskSnapshot, Settlement
from app.domain.orders import Side
from app.domain.risk import (
    RiskCode,
    RiskLimits,
    SymbolLimits,
    TradingState,
    signed,
    worst_case_exposure,
)
from app.redisio.embedded import EmbeddedRedis
from app.redisio.multiplexed import MultiplexedRedis
from app.storage.redis.idempotency import KeyClaim, KeyHeld
from app.storage.redis.keys import RiskKeys, idempotency
from app.storage.redis.risk_state import RiskStore
from app.storage.redis.scripts import load_script
from tests.conftest import free_port

T = TypeVar("T")

ACCOUNT = "acct-1"
MARKS = {"AAPL": Decimal(100), "MSFT": Decimal(250), "TSLA": Decimal(40)}
SYMBOLS = sorted(MARKS)
MACHINE_DB, EXAMPLES_DB = 12, 13  # Redis db indexes of this file's own
DUPLICATE_WINDOW_MS = 600_000  # longer than any run: a signature stays taken
# Lua sums notionals as doubles; exact sums this close to a limit are decided as Lua does.
GROSS_TOLERANCE = Decimal("0.000001")
OK = "ok"


def db_url(server: EmbeddedRedis, db: int) -> str:
    return server.url.rsplit("/", 1)[0] + f"/{db}"


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# -- the model -------------------------------------------------------------------------------
@dataclass
class OpenOrder:
    symbol: str
    side: Side
    qty: Decimal
    filled: Decimal = Decimal(0)

    @property
    def rest(self) -> Decimal:
        return self.qty - self.filled


@dataclass(frozen=True)
class StoredGross:
    """The account's gross and one symbol's worst-case notional as Redis holds them (the
    doubles the reserve script adds up)."""

    gross: float
    symbol_notional: float

    def after(self, symbol: str, worst_case: Decimal) -> float:
        """The gross the script computes if ``symbol``'s worst case becomes ``worst_case``."""
        notional = int(worst_case * 1_000_000) / 1_000_000 * float(MARKS[symbol])
        return self.gross - self.symbol_notional + notional


@dataclass
class Account:
    """What the database would hold for the account, and what Redis must agree with."""

    limits: RiskLimits
    kill_account: tuple[bool, int]
    kill_global: tuple[bool, int]
    positions: dict[str, Decimal]
    orders: dict[str, OpenOrder] = field(default_factory=dict)
    duplicates: set[str] = field(default_factory=set)  # signatures taken inside the window

    def position(self, symbol: str) -> Decimal:
        return self.positions.get(symbol, Decimal(0))

    def open_qty(self, symbol: str, side: Side) -> Decimal:
        return sum(
            (o.rest for o in self.orders.values() if o.symbol == symbol and o.side is side),
            Decimal(0),
        )

    def worst_case(self, symbol: str) -> Decimal:
        return worst_case_exposure(
            self.position(symbol),
            self.open_qty(symbol, Side.BUY),
            self.open_qty(symbol, Side.SELL),
        )

    def gross(self) -> Decimal:
        return sum((self.worst_case(s) * MARKS[s] for s in SYMBOLS), Decimal(0))

    def image(self) -> AccountImage:
        return AccountImage(
            limits=self.limits,
            kill_account=self.kill_account,
            kill_global=self.kill_global,
            positions={s: q for s, q in self.positions.items() if q != 0},
            marks=dict(MARKS),
            reservations=[
                (coid, o.symbol, o.side, o.qty, o.filled) for coid, o in self.orders.items()
            ],
        )

    def expected_answer(
        self, symbol: str, side: Side, qty: Decimal, signature: str | None, stored: StoredGross
    ) -> str:
        """What the reserve script must answer: 'ok' or the code of the first failing check,
        in the script's order."""
        pos = self.position(symbol)
        buys, sells = self.open_qty(symbol, Side.BUY), self.open_qty(symbol, Side.SELL)
        if side is Side.BUY:
            reducing = pos < 0 and pos + buys + qty <= 0
            new_buys, new_sells = buys + qty, sells
        else:
            reducing = pos > 0 and pos - sells - qty >= 0
            new_buys, new_sells = buys, sells + qty
        limits = self.limits
        if limits.trading_state is TradingState.HALTED:
            return RiskCode.TRADING_HALTED
        if not reducing:
            if self.kill_global[0] or self.kill_account[0]:
                return RiskCode.KILL_SWITCH
            if limits.trading_state is TradingState.REDUCE_ONLY:
                return RiskCode.REDUCE_ONLY
        limit = limits.position_limit(symbol)
        if limit is not None and (
            pos + new_buys > limit if side is Side.BUY else pos - new_sells < -limit
        ):
            return RiskCode.POSITION_LIMIT
        if limits.max_open_orders is not None and len(self.orders) + 1 > limits.max_open_orders:
            return RiskCode.MAX_OPEN_ORDERS
        gross_limit = limits.max_gross_notional
        old = worst_case_exposure(pos, buys, sells)
        new = worst_case_exposure(pos, new_buys, new_sells)
        if gross_limit is not None and new > old:
            gross = self.gross() + (new - old) * MARKS[symbol]
            if abs(gross - gross_limit) > GROSS_TOLERANCE:
                over = gross > gross_limit
            else:  # too close to call exactly: decide as the script's doubles do
                over = stored.after(symbol, new) > float(gross_limit)
                event("reserve: gross decided within float noise of its limit")
            if over:
                return RiskCode.GROSS_NOTIONAL
        if signature in self.duplicates:
            return RiskCode.DUPLICATE_ORDER
        return OK

    def edge_quantity(self, edge: str, symbol: str, side: Side) -> Decimal | None:
        """The order quantity that lands exactly on an edge: the last one still risk-reducing
        ('flat'), or the one that reaches the position or gross limit."""
        pos = self.position(symbol)
        buys, sells = self.open_qty(symbol, Side.BUY), self.open_qty(symbol, Side.SELL)
        reach = pos + buys if side is Side.BUY else sells - pos  # how far this side goes
        if edge == "flat":
            return -reach
        if edge == "position":
            limit = self.limits.position_limit(symbol)
            return None if limit is None else limit - reach
        gross_limit = self.limits.max_gross_notional
        if gross_limit is None:
            return None
        worst = self.worst_case(symbol) + (gross_limit - self.gross()) / MARKS[symbol]
        return (worst - reach).quantize(Decimal("0.01"), ROUND_DOWN)

    def settle(self, s: Settlement) -> None:
        order = self.orders.get(s.client_order_id)
        if order is None:
            return
        if s.cum_qty is not None and min(order.qty, s.cum_qty) > order.filled:
            delta = min(order.qty, s.cum_qty) - order.filled
            order.filled += delta
            self.positions[order.symbol] = self.position(order.symbol) + signed(order.side, delta)
        if s.final or order.filled >= order.qty:
            del self.orders[s.client_order_id]

    def breaches(self) -> set[str]:
        """Limits the account is over right now (only a limit change or a rebuild from an
        image over its limits may cause one; accepted orders never do)."""
        found = set()
        for symbol in SYMBOLS:
            limit = self.limits.position_limit(symbol)
            pos = self.position(symbol)
            if limit is not None and pos + self.open_qty(symbol, Side.BUY) > limit:
                found.add(f"long:{symbol}")
            if limit is not None and pos - self.open_qty(symbol, Side.SELL) < -limit:
                found.add(f"short:{symbol}")
        if self.limits.max_open_orders is not None and len(self.orders) > (
            self.limits.max_open_orders
        ):
            found.add("open_orders")
        gross_limit = self.limits.max_gross_notional
        if gross_limit is not None and self.gross() > gross_limit + GROSS_TOLERANCE:
            found.add("gross")
        return found


@dataclass
class BrokerOrder:
    """An order as the broker knows it: what it has filled, and whether it has ended."""

    symbol: str
    side: Side
    qty: Decimal
    filled: Decimal = Decimal(0)
    ended: bool = False


# -- strategies ------------------------------------------------------------------------------
quantities = st.one_of(
    st.integers(1, 40).map(Decimal),
    st.decimals(min_value=Decimal("0.01"), max_value=Decimal(40), places=2),
)
position_limits = st.one_of(
    st.none(),
    st.integers(0, 80).map(Decimal),
    st.decimals(min_value=Decimal(0), max_value=Decimal(80), places=2),
)
risk_limits = st.builds(
    RiskLimits,
    max_position=position_limits,
    max_gross_notional=st.one_of(
        st.none(),
        st.integers(0, 40).map(lambda n: Decimal(n * 500)),
        st.decimals(min_value=Decimal(0), max_value=Decimal(20_000), places=2),
    ),
    max_open_orders=st.none() | st.integers(0, 10),
    # Mostly active: halted and reduce-only accounts accept little, and say little more.
    trading_state=st.sampled_from(
        [TradingState.ACTIVE] * 8 + [TradingState.REDUCE_ONLY, TradingState.HALTED]
    ),
    symbols=st.dictionaries(
        st.sampled_from(SYMBOLS), st.builds(SymbolLimits, max_position=position_limits), max_size=2
    ),
)
kill_switches = st.tuples(st.sampled_from([False] * 7 + [True]), st.integers(0, 5))
symbols = st.sampled_from(SYMBOLS)
sides = st.sampled_from(Side)
open_orders = quantities.flatmap(
    lambda qty: st.builds(
        OpenOrder,
        symbol=symbols,
        side=sides,
        qty=st.just(qty),
        filled=st.integers(0, int(qty * 100) - 1).map(lambda c: Decimal(c) / 100),
    )
)


def cents(qty: Decimal) -> int:
    return int(qty * 100)


def aged(switch: tuple[bool, int], age: int) -> tuple[bool, int]:
    """The switch flipped, ``age`` generations newer (or older); unchanged for age 0."""
    active, generation = switch
    if age == 0 or generation + age < 0:
        return switch
    return (not active, generation + age)


# -- the machine -----------------------------------------------------------------------------
_machine_redis_url = ""  # set by the test below, from the session's redis-server


class RiskReservationMachine(RuleBasedStateMachine):
    """One account: Redis (through RiskStore) against the model, after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.redis: Redis = self.run(self._connect())  # to look at Redis directly
        self.commands = MultiplexedRedis(_machine_redis_url)
        self.store = RiskStore(self.commands)
        self.account: Account | None = None
        self.sent: list[Settlement] = []  # every settlement sent, for replays
        self.broker: dict[str, BrokerOrder] = {}  # every order the broker has
        self.truth: dict[str, Decimal] = {}  # positions by what the broker filled
        self.reports: list[Settlement] = []  # the broker's reports, not yet applied, in order
        self.releases: list[Settlement] = []  # the gateway's releases, not yet sent
        self.unknown: list[str] = []  # ids Redis never held or has forgotten
        self.tolerated: set[str] = set()  # breaches a limit change or image caused
        self.ids = 0

    async def _connect(self) -> Redis:
        return Redis.from_url(_machine_redis_url)

    def run(self, call: Awaitable[T]) -> T:
        return self.loop.run_until_complete(call)

    def teardown(self) -> None:
        self.run(self.redis.aclose())
        self.run(self.commands.close())
        self.loop.close()

    @property
    def model(self) -> Account:
        assert self.account is not None
        return self.account

    def new_id(self) -> str:
        self.ids += 1
        return f"c{self.ids}"

    def snapshot(self) -> RiskSnapshot:
        return self.run(self.store.snapshot(ACCOUNT))

    def settle(self, settlements: list[Settlement]) -> None:
        self.run(self.store.settle(settlements))
        for s in settlements:
            self.model.settle(s)
            if s.client_order_id not in self.model.orders:
                self.unknown.append(s.client_order_id)
        self.sent.extend(settlements)

    @initialize(
        limits=risk_limits,
        kill_account=kill_switches,
        kill_global=kill_switches,
        positions=st.dictionaries(symbols, st.integers(-30, 30).map(Decimal)),
        orders=st.lists(open_orders, max_size=3),
    )
    def build_the_account(
        self,
        limits: RiskLimits,
        kill_account: tuple[bool, int],
        kill_global: tuple[bool, int],
        positions: dict[str, Decimal],
        orders: list[OpenOrder],
    ) -> None:
        """The account as the database holds it, open (partly filled) orders included."""
        self.run(self.redis.flushdb())
        self.account = Account(limits, kill_account, kill_global, positions)
        self.model.orders = {f"db{i}": order for i, order in enumerate(orders)}
        self.broker = {
            coid: BrokerOrder(o.symbol, o.side, o.qty, o.filled)
            for coid, o in self.model.orders.items()
        }
        self.truth = dict(positions)
        self.reports, self.releases = [], []
        assert self.run(self.store.load(ACCOUNT, self.model.image())) is True
        self.tolerated = self.model.breaches()

    # -- orders --------------------------------------------------------------------------
    def reserve(self, symbol: str, side: Side, qty: Decimal, signature: str | None) -> None:
        coid = self.new_id()
        raw = self.run(self.redis.hmget(RiskKeys(ACCOUNT).exposure, ["gross", f"gx:{symbol}"]))
        stored = StoredGross(*(0.0 if v is None else float(text(v)) for v in raw))
        expected = self.model.expected_answer(symbol, side, qty, signature, stored)
        duplicate = None if signature is None else (signature, DUPLICATE_WINDOW_MS)
        outcome = self.run(
            self.store.reserve(ACCOUNT, coid, symbol, side, qty, MARKS[symbol], duplicate)
        )
        answer = outcome.code if outcome.kind == "reject" else outcome.kind
        event(f"reserve: {answer}")
        assert answer == expected, (
            f"{side} {qty} {symbol}: Lua answered {outcome}, the model expects {expected}"
        )
        if answer == OK:
            self.model.orders[coid] = OpenOrder(symbol, side, qty)
            self.broker[coid] = BrokerOrder(symbol, side, qty)
            if signature is not None:
                self.model.duplicates.add(signature)
        else:
            self.unknown.append(coid)

    @rule(symbol=symbols, qty=quantities)
    def submit_a_buy(self, symbol: str, qty: Decimal) -> None:
        self.reserve(symbol, Side.BUY, qty, None)

    @rule(symbol=symbols, qty=quantities)
    def submit_a_sell(self, symbol: str, qty: Decimal) -> None:
        self.reserve(symbol, Side.SELL, qty, None)

    @rule(symbol=symbols, side=sides, qty=st.sampled_from([Decimal(1), Decimal(2)]))
    def submit_an_order_inside_a_duplicate_window(
        self, symbol: str, side: Side, qty: Decimal
    ) -> None:
        self.reserve(symbol, side, qty, f"{symbol}|{side.value}|{qty}")

    @rule(symbol=symbols, past=st.sampled_from([Decimal(0), Decimal("0.01")]))
    def submit_an_order_that_flattens_a_position(self, symbol: str, past: Decimal) -> None:
        """The largest order that still reduces the position (even if every open order on
        its side fills), or one hundredth more: allowed, or not, under a kill switch."""
        pos = self.model.position(symbol)
        side = Side.BUY if pos < 0 else Side.SELL
        qty = self.model.edge_quantity("flat", symbol, side)
        if pos != 0 and qty is not None and qty + past > 0:
            self.reserve(symbol, side, qty + past, None)

    @rule(
        symbol=symbols,
        side=sides,
        edge=st.sampled_from(["position", "gross"]),
        past=st.sampled_from([Decimal(0), Decimal("0.01")]),
    )
    def submit_an_order_that_reaches_a_limit(
        self, symbol: str, side: Side, edge: str, past: Decimal
    ) -> None:
        """Exactly the quantity that reaches the limit, or one hundredth past it."""
        qty = self.model.edge_quantity(edge, symbol, side)
        if qty is not None and qty + past > 0:
            self.reserve(symbol, side, qty + past, None)

    @precondition(lambda self: self.account is not None and self.account.orders)
    @rule(data=st.data(), symbol=symbols, side=sides, qty=quantities)
    def resubmit_an_open_order_id(
        self, data: st.DataObject, symbol: str, side: Side, qty: Decimal
    ) -> None:
        """An id that holds a reservation answers 'held' before any check, whatever the
        order says: a retried submission never reserves twice."""
        coid = data.draw(st.sampled_from(sorted(self.model.orders)))
        outcome = self.run(
            self.store.reserve(ACCOUNT, coid, symbol, side, qty, MARKS[symbol], None)
        )
        assert outcome.kind == "held"

    def live_at_the_broker(self) -> list[str]:
        return sorted(c for c, o in self.broker.items() if not o.ended)

    @precondition(lambda self: self.account is not None and self.live_at_the_broker())
    @rule(data=st.data())
    def the_broker_fills_some_orders(self, data: st.DataObject) -> None:
        """Fills, each reported with the cumulative quantity; a complete fill ends the order
        (its report may overstate it: capped at the order's qty)."""
        coids = data.draw(
            st.lists(
                st.sampled_from(self.live_at_the_broker()), min_size=1, max_size=3, unique=True
            )
        )
        for coid in coids:
            order = self.broker[coid]
            cum = Decimal(data.draw(st.integers(cents(order.filled) + 1, cents(order.qty)))) / 100
            self.truth[order.symbol] = self.truth.get(order.symbol, Decimal(0)) + signed(
                order.side, cum - order.filled
            )
            order.filled, order.ended = cum, cum == order.qty
            if order.ended:  # a report may overstate a complete fill
                reported = cum + data.draw(st.sampled_from([Decimal(0), Decimal(1)]))
            else:
                reported = cum
            mark = data.draw(st.sampled_from([None, MARKS[order.symbol]]))
            self.reports.append(Settlement(ACCOUNT, coid, reported, order.ended, mark))

    @precondition(lambda self: self.account is not None and self.live_at_the_broker())
    @rule(data=st.data(), how=st.sampled_from(["cancel", "expire", "reject"]))
    def the_broker_ends_an_order(self, data: st.DataObject, how: str) -> None:
        """Its final report carries what it had filled. A cancel or a reject is also
        acknowledged to the gateway, which releases with the same quantity."""
        coid = data.draw(st.sampled_from(self.live_at_the_broker()))
        order = self.broker[coid]
        if how == "reject" and order.filled > 0:
            how = "cancel"  # a broker rejects only what never traded
        order.ended = True
        end = Settlement(ACCOUNT, coid, order.filled, final=True)
        self.reports.append(end)
        if how != "expire":
            self.releases.append(end)

    @precondition(lambda self: self.account is not None and self.reports)
    @rule(data=st.data())
    def the_applier_settles_reports(self, data: st.DataObject) -> None:
        """The oldest reports, in the broker's order, in one batch."""
        count = data.draw(st.integers(1, len(self.reports)))
        batch, self.reports = self.reports[:count], self.reports[count:]
        self.settle(batch)

    @precondition(lambda self: self.account is not None and self.releases)
    @rule(data=st.data())
    def the_gateway_releases_an_ended_order(self, data: st.DataObject) -> None:
        """Before, between or after the order's reports: any interleaving."""
        release = self.releases.pop(data.draw(st.integers(0, len(self.releases) - 1)))
        self.run(self.store.release(ACCOUNT, release.client_order_id, release.cum_qty))
        self.model.settle(release)
        self.sent.append(release)
        if release.client_order_id not in self.model.orders:
            self.unknown.append(release.client_order_id)

    @precondition(lambda self: self.account is not None and (self.sent or self.unknown))
    @rule(data=st.data())
    def replay_old_reports(self, data: st.DataObject) -> None:
        """Reports already applied, older fills arriving late, releases of orders Redis does
        not hold: none changes anything."""
        replays: list[Settlement] = []
        if self.sent:
            replays += data.draw(st.lists(st.sampled_from(self.sent), max_size=3))
        filled = sorted(c for c, o in self.model.orders.items() if o.filled > 0)
        if filled:
            for coid in data.draw(st.lists(st.sampled_from(filled), max_size=2)):
                cum = data.draw(st.integers(0, cents(self.model.orders[coid].filled)))
                replays.append(Settlement(ACCOUNT, coid, Decimal(cum) / 100, final=False))
        if self.unknown:
            unknown = data.draw(st.lists(st.sampled_from(self.unknown), max_size=2))
            replays += [Settlement(ACCOUNT, coid, Decimal(0), final=True) for coid in unknown]
        before = self.snapshot()
        self.run(self.store.settle(replays))
        assert self.snapshot() == before

    # -- the account -----------------------------------------------------------------------
    @rule(wipe=st.booleans(), kill_age=st.sampled_from([0, -1, 1]))
    def rebuild_from_the_database(self, wipe: bool, kill_age: int) -> None:
        """Redis lost the account, or a rebuild is forced. A forced one may race a kill
        switch change (``kill_age``: the image's switches are older or newer than Redis's,
        and flipped): the newer setting wins."""
        image = self.model.image()
        if wipe:
            self.run(self.redis.delete(*RiskKeys(ACCOUNT).all))
            probe = self.store.reserve(
                ACCOUNT, "probe", "AAPL", Side.BUY, Decimal(1), MARKS["AAPL"], None
            )
            assert self.run(probe).kind == "nostate"
        else:
            image = replace(
                image,
                kill_account=aged(image.kill_account, kill_age),
                kill_global=aged(image.kill_global, kill_age),
            )
            if kill_age > 0:
                self.model.kill_account, self.model.kill_global = (
                    image.kill_account,
                    image.kill_global,
                )
        assert self.run(self.store.load(ACCOUNT, image, replace=not wipe)) is True
        assert self.run(self.store.load(ACCOUNT, self.model.image())) is False  # built now

    @rule(limits=risk_limits)
    def change_the_limits(self, limits: RiskLimits) -> None:
        self.run(self.store.set_limits(ACCOUNT, limits))
        self.model.limits = limits
        self.tolerated |= self.model.breaches()

    @rule(
        switch=st.sampled_from(["kill_account", "kill_global"]),
        active=st.sampled_from([False, False, False, True]),
        step=st.integers(-2, 3),
    )
    def flip_a_kill_switch(self, switch: str, active: bool, step: int) -> None:
        """A setting carries a generation; one no newer than Redis's is ignored."""
        current: tuple[bool, int] = getattr(self.model, switch)
        generation = max(0, current[1] + step)
        self.run(self.store.set_kill([ACCOUNT], switch, active, generation))
        if generation > current[1]:
            setattr(self.model, switch, (active, generation))

    # -- after every step --------------------------------------------------------------------
    @invariant()
    def redis_holds_the_models_exposure_and_orders(self) -> None:
        model = self.model
        snap = self.snapshot()
        assert snap.built
        assert snap.limits == model.limits
        exposure = {e.symbol: e for e in snap.exposure}
        for symbol in SYMBOLS:
            e = exposure.get(symbol)
            held = (Decimal(0),) * 3 if e is None else (e.position, e.open_buy, e.open_sell)
            assert held == (
                model.position(symbol),
                model.open_qty(symbol, Side.BUY),
                model.open_qty(symbol, Side.SELL),
            ), symbol
        assert {
            r.client_order_id: (r.symbol, r.side, r.qty, r.filled) for r in snap.reservations
        } == {c: (o.symbol, o.side, o.qty, o.filled) for c, o in model.orders.items()}
        raw_gross = self.run(self.redis.hget(RiskKeys(ACCOUNT).exposure, "gross"))
        gross = Decimal(0) if raw_gross is None else Decimal(text(raw_gross))
        assert abs(gross - model.gross()) <= GROSS_TOLERANCE
        assert abs(snap.gross_notional - model.gross()) <= Decimal("0.01")

    @invariant()
    def once_everything_is_delivered_redis_holds_what_the_broker_did(self) -> None:
        """No fill lost, whichever way and order the reports and releases came."""
        if self.reports or self.releases:
            return
        for symbol in SYMBOLS:
            assert self.model.position(symbol) == self.truth.get(symbol, Decimal(0)), symbol
        ended = {c for c, o in self.broker.items() if o.ended}
        assert not ended & set(self.model.orders), "an ended order still holds a reservation"

    @invariant()
    def redis_holds_the_newest_kill_switches(self) -> None:
        fields = ["kill_account", "gen:kill_account", "kill_global", "gen:kill_global"]
        raw = self.run(self.redis.hmget(RiskKeys(ACCOUNT).state, fields))
        held = [None if v is None else text(v) for v in raw]
        model = self.model
        assert held == [
            "1" if model.kill_account[0] else "0",
            str(model.kill_account[1]),
            "1" if model.kill_global[0] else "0",
            str(model.kill_global[1]),
        ]

    @invariant()
    def accepted_orders_never_breach_a_limit(self) -> None:
        """Checked on the model, which the first invariant holds equal to Redis."""
        breaches = self.model.breaches()
        assert breaches <= self.tolerated, f"over the limits: {breaches - self.tolerated}"
        # A tolerated breach, once gone, may not come back.
        self.tolerated &= breaches


def test_reservations_match_the_orders_and_never_exceed_limits(
    redis_server: EmbeddedRedis,
) -> None:
    """The machine builds its own client (on its own event loop) from this URL."""
    global _machine_redis_url
    _machine_redis_url = db_url(redis_server, MACHINE_DB)
    run_state_machine_as_test(
        RiskReservationMachine,
        settings=settings(max_examples=100, stateful_step_count=30, deadline=None),
    )


# -- examples ----------------------------------------------------------------------------------
LIMITS = RiskLimits(max_position=Decimal(10), max_open_orders=2)


def image(
    limits: RiskLimits = LIMITS,
    kill_account: tuple[bool, int] = (False, 0),
    kill_global: tuple[bool, int] = (False, 0),
) -> AccountImage:
    return AccountImage(limits, kill_account, kill_global, {}, dict(MARKS), [])


@pytest.fixture
async def store(redis_server: EmbeddedRedis) -> AsyncIterator[RiskStore]:
    commands = MultiplexedRedis(db_url(redis_server, EXAMPLES_DB))
    await commands.execute("FLUSHDB")
    yield RiskStore(commands)
    await commands.close()


async def submit(
    store: RiskStore, coid: str, qty: Decimal | int, side: Side = Side.BUY, symbol: str = "AAPL"
) -> str:
    outcome = await store.reserve(ACCOUNT, coid, symbol, side, Decimal(qty), MARKS[symbol], None)
    return outcome.code if outcome.kind == "reject" else outcome.kind


async def test_a_reservation_redis_runs_after_the_gateway_gave_up_on_it_is_released(
    tmp_path: Path,
) -> None:
    # A hung Redis runs what it was sent once it resumes. The order was refused (503), so
    # the reservation that late script makes must go as soon as Redis answers again.
    server = EmbeddedRedis(directory=tmp_path / "redis", port=free_port()).start()
    commands = MultiplexedRedis(server.url, reply_timeout_s=0.1)
    store = RiskStore(commands)
    try:
        await store.load(ACCOUNT, image())
        assert await submit(store, "before", 1) == OK  # (Redis now has the script)
        assert server.pid is not None
        os.kill(server.pid, signal.SIGSTOP)
        try:
            with pytest.raises((RedisError, OSError, TimeoutError)):
                await submit(store, "refused", 1)
        finally:
            os.kill(server.pid, signal.SIGCONT)
        probe = MultiplexedRedis(server.url)
        try:  # the late script runs: the refused order's reservation is there for now
            for _ in range(200):
                if await probe.execute("HEXISTS", RiskKeys(ACCOUNT).reservations, "refused"):
                    break
                await asyncio.sleep(0.01)
            else:
                pytest.fail("the refused order's script never ran")
        finally:
            await probe.close()
        assert await submit(store, "next", 1) == OK  # gives the refused attempt up first
        snapshot = await store.snapshot(ACCOUNT)
        assert [r.client_order_id for r in snapshot.reservations] == ["before", "next"]
        assert [e.open_buy for e in snapshot.exposure] == [Decimal(2)]
    finally:
        await store.close()
        await commands.close()
        server.stop()


async def test_an_abandoned_attempt_reserves_nothing_whichever_script_runs_first(
    redis_server: EmbeddedRedis,
) -> None:
    commands = MultiplexedRedis(db_url(redis_server, EXAMPLES_DB))
    reserve, abandon = (
        load_script(
            commands, "app.storage.redis", name, preludes=("risk_common", "idempotency_common")
        )
        for name in ("risk_reserve", "risk_abandon")
    )
    keys = RiskKeys(ACCOUNT)

    def reserve_call(coid: str, attempt: str) -> Awaitable[list[bytes]]:
        return reserve(
            keys=[*keys.all, keys.duplicate("-"), keys.tombstone(attempt)],
            args=[coid, "AAPL", "buy", "1000000", "100", "", "0", attempt],
        )

    def abandon_call(coid: str, attempt: str) -> Awaitable[int]:
        return abandon(keys=[*keys.all, keys.tombstone(attempt)], args=[coid, attempt, "60000"])

    store = RiskStore(commands)
    try:
        await commands.execute("FLUSHDB")
        await store.load(ACCOUNT, image())
        # Given up before its script ran: the script, arriving late, does nothing.
        assert await abandon_call("a", "a-1") == 0
        assert (await reserve_call("a", "a-1"))[0] == b"abandoned"
        # A retry under the same client_order_id is another attempt, and is decided.
        assert (await reserve_call("a", "a-2"))[0] == b"ok"
        # Its script ran first: giving it up releases what it reserved, and only that.
        assert (await reserve_call("b", "b-1"))[0] == b"ok"
        assert await abandon_call("b", "b-1") == 1
        assert await abandon_call("a", "a-1") == 0  # a-1 never held "a"; a-2 does
        snapshot = await store.snapshot(ACCOUNT)
        assert [r.client_order_id for r in snapshot.reservations] == ["a"]
        assert [e.open_buy for e in snapshot.exposure] == [Decimal(1)]
    finally:
        await commands.close()


async def test_the_reservation_claims_the_idempotency_key_in_the_same_step(
    store: RiskStore,
) -> None:
    await store.load(ACCOUNT, image())
    key = idempotency(ACCOUNT, "k-1")
    first = KeyClaim(key, "fp-1", 60_000)
    outcome = await store.reserve(
        ACCOUNT, "k-1", "AAPL", Side.BUY, Decimal(1), MARKS["AAPL"], None, first
    )
    assert (outcome.kind, outcome.key_claimed) == ("ok", True)
    # Another request with the key: told who holds it; nothing checked or reserved.
    second = KeyClaim(key, "fp-2", 60_000)
    with pytest.raises(KeyHeld) as held:
        await store.reserve(
            ACCOUNT, "k-1-again", "AAPL", Side.BUY, Decimal(1), MARKS["AAPL"], None, second
        )
    assert (held.value.claim.fingerprint, held.value.claim.answer) == ("fp-1", None)
    snapshot = await store.snapshot(ACCOUNT)
    assert [r.client_order_id for r in snapshot.reservations] == ["k-1"]


async def test_an_account_without_risk_state_claims_no_key(redis_server: EmbeddedRedis) -> None:
    """It is rebuilt, then asked again: the key is claimed by the call that decides."""
    commands = MultiplexedRedis(db_url(redis_server, EXAMPLES_DB))
    try:
        await commands.execute("FLUSHDB")
        key = idempotency(ACCOUNT, "k-2")
        outcome = await RiskStore(commands).reserve(
            ACCOUNT,
            "k-2",
            "AAPL",
            Side.BUY,
            Decimal(1),
            MARKS["AAPL"],
            None,
            KeyClaim(key, "fp", 60_000),
        )
        assert (outcome.kind, outcome.key_claimed) == ("nostate", False)
        assert await commands.execute("EXISTS", key) == 0
    finally:
        await commands.close()


async def test_replaying_a_settlement_changes_nothing(store: RiskStore) -> None:
    await store.load(ACCOUNT, image())
    assert await submit(store, "o1", 10) == OK
    fill = Settlement(ACCOUNT, "o1", Decimal(4), final=False)
    await store.settle([fill])
    after_fill = await store.snapshot(ACCOUNT)
    await store.settle([fill, Settlement(ACCOUNT, "o1", Decimal(2), final=False)])
    assert await store.snapshot(ACCOUNT) == after_fill

    done = Settlement(ACCOUNT, "o1", Decimal(7), final=True)
    await store.settle([done])
    after_done = await store.snapshot(ACCOUNT)
    assert after_done.reservations == []
    assert [(e.position, e.open_buy) for e in after_done.exposure] == [(Decimal(7), Decimal(0))]
    await store.settle([done, fill, Settlement(ACCOUNT, "o1", Decimal(10), final=False)])
    await store.release(ACCOUNT, "o1", Decimal(7))
    assert await store.snapshot(ACCOUNT) == after_done


async def test_one_batch_settles_each_account_in_its_own_order(store: RiskStore) -> None:
    # One script call per account: the batch is split by account, and every settlement
    # reaches its own account.
    other = "acct-2"
    for account in (ACCOUNT, other):
        await store.load(account, image())
        for coid in ("o1", "o2"):
            outcome = await store.reserve(
                account, coid, "AAPL", Side.BUY, Decimal(4), MARKS["AAPL"], None
            )
            assert outcome.kind == OK
    await store.settle(
        [
            Settlement(ACCOUNT, "o1", Decimal(3), final=False),
            Settlement(other, "o2", Decimal(4), final=True),
            Settlement(ACCOUNT, "o1", Decimal(3), final=True),
            Settlement(other, "o1", Decimal(2), final=False),
        ]
    )
    mine, theirs = await store.snapshot(ACCOUNT), await store.snapshot(other)
    assert [r.client_order_id for r in mine.reservations] == ["o2"]
    assert [(e.position, e.open_buy) for e in mine.exposure] == [(Decimal(3), Decimal(4))]
    assert [(r.client_order_id, r.filled) for r in theirs.reservations] == [("o1", Decimal(2))]
    assert [(e.position, e.open_buy) for e in theirs.exposure] == [(Decimal(6), Decimal(2))]


async def test_a_released_reservation_frees_capacity_for_the_next_order(
    store: RiskStore,
) -> None:
    await store.load(ACCOUNT, image())
    assert await submit(store, "o1", 6) == OK
    assert await submit(store, "o2", 4) == OK
    assert await submit(store, "o3", 1) == RiskCode.POSITION_LIMIT
    await store.settle([Settlement(ACCOUNT, "o1", Decimal(2), final=False)])
    await store.release(ACCOUNT, "o2", Decimal(0))  # the broker rejected it: nothing filled
    assert await submit(store, "o4", 9) == RiskCode.POSITION_LIMIT  # 2 held + 4 open + 9 > 10
    await store.release(ACCOUNT, "o1", Decimal(2))  # 2 filled, 4 given back
    assert await submit(store, "o5", 8) == OK  # 2 + 8 = 10
    assert await submit(store, "o6", 1) == RiskCode.POSITION_LIMIT


async def test_an_account_without_risk_state_answers_nostate(store: RiskStore) -> None:
    assert await submit(store, "o1", 1) == "nostate"
    # A kill switch written before the state is built does not make it built.
    await store.set_kill([ACCOUNT], "kill_account", True, 3)
    assert await submit(store, "o1", 1) == "nostate"
    snap = await store.snapshot(ACCOUNT)
    assert not snap.built
    assert snap.reservations == []
    assert snap.exposure == []


async def test_an_older_kill_switch_generation_never_overwrites_a_newer_one(
    store: RiskStore,
) -> None:
    # Set while the account is not built; a rebuild from an older image keeps it.
    await store.set_kill([ACCOUNT], "kill_account", True, 5)
    assert await store.load(ACCOUNT, image(kill_account=(False, 4)))
    assert (await store.snapshot(ACCOUNT)).kill_account
    assert await submit(store, "o1", 1) == RiskCode.KILL_SWITCH

    await store.set_kill([ACCOUNT], "kill_account", False, 3)  # older
    await store.set_kill([ACCOUNT], "kill_account", False, 5)  # not newer
    assert (await store.snapshot(ACCOUNT)).kill_account
    await store.set_kill([ACCOUNT], "kill_account", False, 6)
    assert not (await store.snapshot(ACCOUNT)).kill_account
    assert await submit(store, "o1", 1) == OK

    # A forced rebuild from an image older than Redis's setting keeps Redis's ...
    assert await store.load(ACCOUNT, image(kill_account=(True, 5)), replace=True)
    assert not (await store.snapshot(ACCOUNT)).kill_account
    # ... and one from a newer image takes the image's.
    assert await store.load(ACCOUNT, image(kill_account=(True, 7)), replace=True)
    assert (await store.snapshot(ACCOUNT)).kill_account
    assert await submit(store, "o2", 1) == RiskCode.KILL_SWITCH


async def test_a_kill_switch_passes_only_orders_that_reduce_even_if_open_orders_fill(
    store: RiskStore,
) -> None:
    positions = {"AAPL": Decimal(10), "MSFT": Decimal(-4)}
    await store.load(
        ACCOUNT, AccountImage(RiskLimits(), (True, 1), (False, 0), positions, dict(MARKS), [])
    )
    assert await submit(store, "s1", 6, Side.SELL) == OK  # long 10, selling 6
    assert await submit(store, "s2", 4, Side.SELL) == OK  # ... and 4 more: flat at worst
    assert await submit(store, "s3", Decimal("0.01"), Side.SELL) == RiskCode.KILL_SWITCH
    assert await submit(store, "b1", 1, Side.BUY) == RiskCode.KILL_SWITCH  # adds to the long
    assert await submit(store, "b2", 4, Side.BUY, "MSFT") == OK  # short 4, buying 4
    assert await submit(store, "b3", Decimal("0.01"), Side.BUY, "MSFT") == RiskCode.KILL_SWITCH


async def test_the_gross_limit_admits_an_order_that_reaches_it_and_any_that_does_not_raise_it(
    store: RiskStore,
) -> None:
    await store.load(ACCOUNT, image(RiskLimits(max_gross_notional=Decimal(2000))))
    assert await submit(store, "b1", 15) == OK  # 15 AAPL at 100: 1500
    assert await submit(store, "b2", 2, symbol="MSFT") == OK  # + 2 MSFT at 250: 2000, the limit
    assert await submit(store, "b3", Decimal("0.01")) == RiskCode.GROSS_NOTIONAL
    # Over a lowered limit, an order that leaves its symbol's worst case as it is still passes.
    await store.set_limits(ACCOUNT, RiskLimits(max_gross_notional=Decimal(1000)))
    assert await submit(store, "s1", 10, Side.SELL) == OK  # worst case stays 15 AAPL
    assert await submit(store, "s2", 6, Side.SELL) == RiskCode.GROSS_NOTIONAL  # 16 short
    assert (await store.snapshot(ACCOUNT)).gross_notional == Decimal(2000)


async def test_a_price_move_alone_never_blocks_an_order_that_reduces(store: RiskStore) -> None:
    limits = RiskLimits(max_gross_notional=Decimal(1500))
    long_ten = AccountImage(limits, (True, 1), (False, 0), {"AAPL": Decimal(10)}, MARKS, [])
    await store.load(ACCOUNT, long_ten)  # 10 AAPL at 100: 1000, and the kill switch on
    # The price doubles: the account is over its gross limit, and must still be able to sell.
    sell = await store.reserve(ACCOUNT, "s1", "AAPL", Side.SELL, Decimal(1), Decimal(200), None)
    assert sell.kind == OK
    buy = await store.reserve(ACCOUNT, "b1", "AAPL", Side.BUY, Decimal(1), Decimal(200), None)
    assert buy.code == RiskCode.KILL_SWITCH
