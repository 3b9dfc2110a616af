"""Risk controls for operators: limits per account, kill switches, the live risk state.

Every change is written to the database first (the source of truth, with an audit row), then
pushed to Redis, where the next order on any worker sees it.

A kill switch with ``cancel_open`` sweeps twice. The first sweep, at once, cancels the open
orders the order log holds. An order that passed its risk reservation just before the switch
landed may still be on its way (waiting for a pacing token, in a placement batch, at the
broker awaiting its answer): the broker acknowledges it after that sweep. So the ids holding
a reservation when the switch landed are noted, and once every such placement must have
settled (``placement_settle_s``, from the settings) a second sweep cancels those of them now
live. Reductions placed after the switch (which it lets through) are not among them. The
second sweep is the process's that set the switch: one shutting down before it runs leaves
it undone (logged). A placement that timed out is ``unknown`` until reconciliation resolves
it, and is not canceled by either sweep.

Why not check the switch as each placement's answer is recorded instead: nothing Redis runs
on that path reads the account's state (the breaker's script lives in the broker's slot), so
it would be one more round trip on every order, after the outcome commits (to be race-free
against the sweep), for an event of a few times a year; the second sweep costs orders nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from redis.exceptions import RedisError

from app.domain.errors import RequestInvalid, validation_errors
from app.domain.exposure import RiskSnapshot
from app.domain.risk import RiskLimits, patched_limits
from app.services.orders import OrderService
from app.services.risk import RiskService
from app.storage.redis.risk_state import RiskStore
from app.storage.sql.risk_repository import ACCOUNT, GLOBAL, KillSwitchRow, RiskRepository

log = logging.getLogger(__name__)

# The second sweep waits this much beyond the settings' bound: a busy event loop (the placing
# worker's or this one's) stretches every wait a little.
SETTLE_MARGIN_S = 0.5


@dataclass(frozen=True, slots=True)
class KillSwitchOutcome:
    scope: str
    account: str | None
    active: bool
    generation: int
    canceled_orders: int
    at: datetime
    by: str


@dataclass(frozen=True, slots=True)
class RiskState:
    kill_switches: list[KillSwitchRow]
    accounts: list[RiskSnapshot]


class RiskControlService:
    def __init__(
        self,
        *,
        risk: RiskService,
        store: RiskStore,
        repo: RiskRepository,
        orders: OrderService,
        default_limits: RiskLimits,
        placement_settle_s: float,
    ) -> None:
        """``placement_settle_s``: the longest a placement that passed its reservation can
        take to reach a recorded outcome (``Settings.placement_settle_s``)."""
        self._risk = risk
        self._store = store
        self._repo = repo
        self._orders = orders
        self._default_limits = default_limits
        self._settle_s = placement_settle_s + SETTLE_MARGIN_S
        self._second_sweeps: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        """Stop second sweeps still waiting (shutdown)."""
        for sweep in self._second_sweeps:
            log.warning("shutting down: a kill switch's second sweep is not made")
            sweep.cancel()
        await asyncio.gather(*self._second_sweeps, return_exceptions=True)

    async def limits(self, account: str) -> RiskLimits:
        """The account's limits: its own, else the configured defaults."""
        return await self._repo.limits(account) or self._default_limits

    async def set_limits(self, actor: str, account: str, limits: RiskLimits) -> RiskLimits:
        """Replace the account's limits (absent fields: no limit) on every worker."""
        await self._repo.put_limits(account, limits, actor, datetime.now(UTC))
        return await self._apply_limits(actor, account, limits)

    async def patch_limits(self, actor: str, account: str, patch: dict[str, Any]) -> RiskLimits:
        """Change only the limits ``patch`` names (a JSON merge patch) on every worker.
        Raises ``RequestInvalid`` if the result is not valid limits (nothing changes)."""

        def change(current: RiskLimits) -> RiskLimits:
            try:
                return patched_limits(current, patch)
            except ValidationError as exc:
                raise RequestInvalid(
                    "the patched limits are not valid",
                    errors=validation_errors(exc.errors(), prefix=("body",)),
                ) from exc

        limits = await self._repo.change_limits(
            account, change, self._default_limits, actor, datetime.now(UTC)
        )
        return await self._apply_limits(actor, account, limits)

    async def _apply_limits(self, actor: str, account: str, limits: RiskLimits) -> RiskLimits:
        await self._store.set_limits(account, limits)
        self._risk.forget_limits(account)
        log.info("risk limits of %s set by %s", account, actor)
        return limits

    async def set_kill_switch(
        self, actor: str, scope: str, account: str | None, active: bool, cancel_open: bool
    ) -> KillSwitchOutcome:
        at = datetime.now(UTC)
        target = account if scope == ACCOUNT and account is not None else ""
        detail = {"active": active, "cancel_open": cancel_open}
        generation = await self._repo.set_kill_switch(scope, target, active, actor, at, detail)
        if scope == GLOBAL:
            # Every account's state carries the global flag (one slot per account); also
            # those not in Redis yet, so a rebuild racing with this keeps the newer setting.
            accounts = await self._repo.known_accounts() | await self._store.accounts()
            await self._store.set_kill(accounts, "kill_global", active, generation)
        else:
            accounts = {target}
            await self._store.set_kill(accounts, "kill_account", active, generation)
        log.warning(
            "kill switch %s%s %s by %s",
            scope,
            f" {target}" if target else "",
            "ON" if active else "off",
            actor,
        )
        canceled = 0
        if active and cancel_open:
            settled_at = time.monotonic() + self._settle_s
            in_flight = await self._reserved_now(accounts)
            if in_flight:  # set going first: it is due even if the first sweep fails
                sweep = self._second_sweep(scope, target, generation, in_flight, settled_at)
                task = asyncio.create_task(sweep, name=f"kill-switch-{generation}-second-sweep")
                self._second_sweeps.add(task)
                task.add_done_callback(self._second_sweeps.discard)
            for name in sorted(accounts):
                canceled += len(await self._orders.cancel_all(name))
        return KillSwitchOutcome(scope, target or None, active, generation, canceled, at, actor)

    async def _reserved_now(self, accounts: set[str]) -> dict[str, Collection[str] | None]:
        """The orders holding a reservation now, the switch having landed: any of them may
        still be in flight. ``None`` for an account: not known, take every open order."""
        try:
            return dict(await self._store.reserved_orders(accounts))
        except (RedisError, OSError) as exc:
            log.warning("reservations unreadable: the second sweep takes every order: %r", exc)
            return dict.fromkeys(accounts)

    async def _second_sweep(
        self,
        scope: str,
        target: str,
        generation: int,
        in_flight: dict[str, Collection[str] | None],
        settled_at: float,
    ) -> None:
        """Once every placement in flight when the switch landed has settled, cancel those
        now live; unless the switch was changed meanwhile (the newer setting governs)."""
        await asyncio.sleep(max(0.0, settled_at - time.monotonic()))
        try:
            kill_account, kill_global = await self._repo.kill_state(target)
            if (kill_global if scope == GLOBAL else kill_account) != (True, generation):
                log.info("kill switch %d changed since: no second sweep", generation)
                return
            canceled = 0
            for account, ids in sorted(in_flight.items()):
                canceled += len(await self._orders.cancel_all(account, only=ids))
        except Exception:
            log.exception("the second sweep of kill switch %d failed", generation)
            return
        log.log(
            logging.WARNING if canceled else logging.INFO,
            "kill switch %d: %d orders canceled whose placements were in flight",
            generation,
            canceled,
        )

    async def audit_trail(self, limit: int) -> list[dict[str, Any]]:
        """Risk control changes, newest first: who, when, what."""
        return await self._repo.audit_trail(limit)

    async def state(self, accounts: set[str] | None) -> RiskState:
        """Trading states, kill switches, exposure and reservations; ``None``: every
        account the gateway knows."""
        if accounts is None:
            accounts = await self._repo.known_accounts() | await self._store.accounts()
        snapshots = [await self._store.snapshot(a) for a in sorted(accounts)]
        return RiskState(await self._repo.kill_switches(), snapshots)
