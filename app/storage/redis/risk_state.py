"""Pre-trade risk state in Redis: one account's limits, exposure and reservations, changed
only by the Lua scripts in ``storage/lua/risk_*.lua`` (atomic per account, one slot each).

The database is the source of truth; this is the fast copy, rebuilt from it (``load``) when
an account's state is missing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from redis.exceptions import RedisError

from app.domain.exposure import (
    AccountImage,
    Reservation,
    RiskSnapshot,
    Settlement,
    SymbolExposure,
)
from app.domain.orders import QTY_DECIMALS, Side
from app.domain.risk import RiskLimits
from app.redisio.multiplexed import MultiplexedRedis, pairs
from app.storage.redis.idempotency import Claim, KeyClaim, KeyHeld
from app.storage.redis.keys import RiskKeys
from app.storage.redis.scripts import load_script

log = logging.getLogger(__name__)

_SCALE = Decimal(10) ** QTY_DECIMALS


def scaled(qty: Decimal) -> str:
    return str(int(qty * _SCALE))


def unscaled(value: bytes | str | None) -> Decimal:
    return Decimal(0) if value is None else Decimal(int(value)) / _SCALE


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def limit_fields(limits: RiskLimits) -> dict[str, str]:
    """The limits as the reserve script reads them (absent field: no limit), plus the whole
    document (``doc``) that every worker's in-process cache reads."""
    fields = {"doc": limits.model_dump_json(), "state": limits.trading_state.value}
    if limits.max_position is not None:
        fields["max_position"] = scaled(limits.max_position)
    if limits.max_gross_notional is not None:
        fields["max_gross"] = format(limits.max_gross_notional, "f")
    if limits.max_open_orders is not None:
        fields["max_open"] = str(limits.max_open_orders)
    for symbol, override in limits.symbols.items():
        if override.max_position is not None:
            fields[f"maxpos:{symbol}"] = scaled(override.max_position)
    return fields


class ReserveResult(StrEnum):
    """What the reserve script did (its first reply element)."""

    OK = "ok"  # checked and reserved
    HELD = "held"  # this id already holds a reservation: nothing checked or reserved
    NOSTATE = "nostate"  # the account has no risk state here: rebuild it, then again
    REJECT = "reject"  # a check refused it (``code``, ``detail``)
    ABANDONED = "abandoned"  # this attempt was given up before Redis ran it: nothing done


@dataclass(frozen=True, slots=True)
class ReserveOutcome:
    kind: ReserveResult
    code: str = ""
    detail: str = ""
    key_claimed: bool = False  # the idempotency key given was claimed by this call


# Longer than a hung Redis plus its backlog could take to run what was sent meanwhile.
ABANDONED_TTL_MS = 10 * 60 * 1000


class RiskStore:
    def __init__(self, redis: MultiplexedRedis) -> None:
        self._redis = redis
        self._settle, self._abandon, self._load, self._set_limits, self._kill = (
            load_script(redis, "app.storage.redis", name, preludes=("risk_common",))
            for name in ("risk_settle", "risk_abandon", "risk_load", "risk_limits", "risk_kill")
        )
        self._reserve = load_script(
            redis,
            "app.storage.redis",
            "risk_reserve",
            preludes=("risk_common", "idempotency_common"),
        )
        # Reservation attempts whose outcome was never learned (Redis hung or the connection
        # failed), to be given up once Redis answers again: see risk_abandon.lua.
        self._abandoned: list[tuple[str, str, str]] = []
        self._abandoner: asyncio.Task[None] | None = None

    async def reserve(
        self,
        account: str,
        client_order_id: str,
        symbol: str,
        side: Side,
        qty: Decimal,
        mark: Decimal,
        duplicate: tuple[str, int] | None,
        claim: KeyClaim | None = None,
    ) -> ReserveOutcome:
        """Check every stateful limit and reserve the order's exposure, atomically.
        ``duplicate``: (signature, window ms) when the duplicate window applies. ``claim``:
        the order's idempotency key, to claim before the checks in the same step (None: no
        key, or the caller holds it already); raises ``KeyHeld``, with nothing checked or
        reserved, if another request has it."""
        if self._abandoned:
            await self._give_up_abandoned()
        keys = RiskKeys(account)
        signature, window = duplicate if duplicate is not None else ("-", 0)
        attempt = secrets.token_hex(8)
        script_keys = [*keys.all, keys.duplicate(signature), keys.tombstone(attempt)]
        args = [
            client_order_id,
            symbol,
            side.value,
            scaled(qty),
            format(mark, "f"),
            str(window) if window > 0 else "",
            str(int(time.time() * 1000)),
            attempt,
        ]
        if claim is not None:
            script_keys.append(claim.key)
            args += [claim.fingerprint, str(claim.ttl_ms)]
        try:
            result = await self._reserve(keys=script_keys, args=args)
        except BaseException:
            # The script may still run (a hung Redis runs what it was sent once it resumes):
            # the order is refused, so whatever this attempt reserves must not stay.
            self._abandoned.append((account, client_order_id, attempt))
            if self._abandoner is None or self._abandoner.done():
                self._abandoner = asyncio.create_task(self._give_up_when_redis_answers())
            raise
        reply = _text(result[0])
        if reply == "claimed":
            raise KeyHeld(Claim.parse(result[1]))
        kind = ReserveResult(reply)
        claimed = claim is not None and kind not in (
            ReserveResult.ABANDONED,
            ReserveResult.NOSTATE,
        )
        if kind is ReserveResult.REJECT:
            return ReserveOutcome(kind, _text(result[1]), _text(result[2]), claimed)
        return ReserveOutcome(kind, key_claimed=claimed)

    async def _give_up_when_redis_answers(self) -> None:
        """Abandoned attempts are given up before the next reservation, and here, in the
        background, for a process that gets no further order."""
        delay = 0.05
        while self._abandoned:
            await asyncio.sleep(delay)
            try:
                await self._give_up_abandoned()
            except (RedisError, OSError, TimeoutError) as exc:
                log.debug("abandoned reservations not given up yet: %r", exc)
                delay = min(delay * 2, 1.0)

    async def close(self) -> None:
        if self._abandoner is not None:
            self._abandoner.cancel()
            await asyncio.gather(self._abandoner, return_exceptions=True)

    async def _give_up_abandoned(self) -> None:
        """Tombstone every abandoned attempt and release what it reserved, in one trip.
        The list stays as it is until that succeeds (the background task watches it; giving
        an attempt up twice changes nothing)."""
        abandoned = list(self._abandoned)
        await self._abandon.many(
            (
                [*RiskKeys(account).all, RiskKeys(account).tombstone(attempt)],
                [client_order_id, attempt, str(ABANDONED_TTL_MS)],
            )
            for account, client_order_id, attempt in abandoned
        )
        self._abandoned = [a for a in self._abandoned if a not in abandoned]

    async def settle(self, settlements: Iterable[Settlement]) -> None:
        """Turn fills into position and release what ends, for many orders in one trip:
        one script call per account, not per order (fewer commands to pack and parse)."""
        by_account: dict[str, list[str]] = {}
        for s in settlements:
            by_account.setdefault(s.account, []).extend(_settle_args(s))
        await self._settle.many((RiskKeys(a).all, args) for a, args in by_account.items())

    async def release(self, account: str, client_order_id: str, cum_qty: Decimal) -> None:
        """An order ended with ``cum_qty`` filled (the broker's last word on it): that much
        becomes position, the rest is given back. Idempotent."""
        settlement = Settlement(account, client_order_id, cum_qty, final=True)
        await self._settle(keys=RiskKeys(account).all, args=_settle_args(settlement))

    async def load(self, account: str, image: AccountImage, *, replace: bool = False) -> bool:
        """Write the account's state from the database's image; unless ``replace``, only
        when Redis does not hold it. True if written."""
        doc: dict[str, Any] = {
            "limits": limit_fields(image.limits),
            "kills": {
                "kill_account": ["1" if image.kill_account[0] else "0", image.kill_account[1]],
                "kill_global": ["1" if image.kill_global[0] else "0", image.kill_global[1]],
            },
            "positions": {s: scaled(q) for s, q in image.positions.items()},
            "marks": {s: format(p, "f") for s, p in image.marks.items()},
            "reservations": [
                [coid, symbol, side.value, scaled(qty), scaled(filled)]
                for coid, symbol, side, qty, filled in image.reservations
            ],
        }
        # cjson decodes an empty object as an empty table; both shapes are fine for Lua.
        written = await self._load(
            keys=RiskKeys(account).all, args=[json.dumps(doc), "1" if replace else "0"]
        )
        return bool(written)

    async def set_limits(self, account: str, limits: RiskLimits) -> None:
        """Replace the limits of a built account and tell every worker's cache."""
        await self._set_limits(
            keys=[RiskKeys(account).state], args=[json.dumps(limit_fields(limits))]
        )
        await self._redis.execute("PUBLISH", RiskKeys.limits_channel, account)

    async def set_kill(self, accounts: Iterable[str], field: str, active: bool, gen: int) -> None:
        await self._kill.many(
            ([RiskKeys(account).state], [field, "1" if active else "0", str(gen)])
            for account in accounts
        )

    async def reserved_orders(self, accounts: Iterable[str]) -> dict[str, set[str]]:
        """The client order ids holding a reservation now, per account (one pipelined
        trip; accounts holding none are left out)."""
        names = sorted(accounts)
        replies = await self._redis.execute_many(
            [("HKEYS", RiskKeys(account).reservations) for account in names]
        )
        return {
            account: {_text(coid) for coid in ids}
            for account, ids in zip(names, replies, strict=True)
            if ids
        }

    async def limits_document(self, account: str) -> tuple[bool, str | None]:
        """(built, the limits document) as Redis holds them."""
        built, doc = await self._redis.execute("HMGET", RiskKeys(account).state, "built", "doc")
        return built == b"1", None if doc is None else _text(doc)

    async def accounts(self) -> set[str]:
        """Accounts with risk state in Redis (a SCAN: for controls, not the order path)."""
        found: set[str] = set()
        cursor = b"0"
        while True:
            cursor, batch = await self._redis.execute(
                "SCAN", cursor, "MATCH", RiskKeys.state_pattern(), "COUNT", 1000
            )
            for key in batch:
                name = _text(key)
                found.add(name[name.index("{") + 1 : name.rindex("}")])
            if cursor == b"0":
                return found

    async def snapshot(self, account: str) -> RiskSnapshot:
        keys = RiskKeys(account)
        raw_state, raw_expo, raw_resv = (
            pairs(flat)
            for flat in await self._redis.transaction(
                [
                    ("HGETALL", keys.state),
                    ("HGETALL", keys.exposure),
                    ("HGETALL", keys.reservations),
                ]
            )
        )
        state = {_text(k): _text(v) for k, v in raw_state.items()}
        expo = {_text(k): _text(v) for k, v in raw_expo.items()}
        symbols = sorted(k[4:] for k in expo if k.startswith("pos:"))
        exposure = [
            SymbolExposure(
                symbol=s,
                position=unscaled(expo.get(f"pos:{s}")),
                open_buy=unscaled(expo.get(f"buy:{s}")),
                open_sell=unscaled(expo.get(f"sell:{s}")),
                mark=_money(expo.get(f"mark:{s}")),
                worst_case_notional=_money(expo.get(f"gx:{s}")),
            )
            for s in symbols
        ]
        reservations = []
        for coid, record in sorted(raw_resv.items()):
            symbol, side, qty, filled, at, *_attempt = _text(record).split("|")
            reservations.append(
                Reservation(
                    _text(coid), symbol, Side(side), unscaled(qty), unscaled(filled), int(at)
                )
            )
        doc = state.get("doc")
        return RiskSnapshot(
            account=account,
            built=state.get("built") == "1",
            limits=None if doc is None else RiskLimits.model_validate_json(doc),
            kill_account=state.get("kill_account") == "1",
            kill_global=state.get("kill_global") == "1",
            gross_notional=_money(expo.get("gross")),
            exposure=exposure,
            reservations=reservations,
        )


def _settle_args(s: Settlement) -> list[str]:
    """One settlement's four values in risk_settle.lua's ARGV."""
    return [
        s.client_order_id,
        scaled(s.cum_qty),
        "1" if s.final else "0",
        "" if s.mark is None else format(s.mark, "f"),
    ]


def _money(value: str | None) -> Decimal:
    return Decimal(0) if value is None else Decimal(value).quantize(Decimal("0.01"))
