"""Risk controls for operators: limits per account, kill switches, the live risk state.

Every change is written to the database first (the source of truth, with an audit row), then
pushed to Redis, where the next order on any worker sees it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from app.domain.errors import RequestInvalid, validation_errors
from app.domain.exposure import RiskSnapshot
from app.domain.risk import RiskLimits, patched_limits
from app.services.orders import OrderService
from app.services.risk import RiskService
from app.storage.redis.risk_state import RiskStore
from app.storage.sql.risk_repository import ACCOUNT, GLOBAL, KillSwitchRow, RiskRepository

log = logging.getLogger(__name__)


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
    ) -> None:
        self._risk = risk
        self._store = store
        self._repo = repo
        self._orders = orders
        self._default_limits = default_limits

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
            for name in sorted(accounts):
                canceled += len(await self._orders.cancel_all(name))
        return KillSwitchOutcome(scope, target or None, active, generation, canceled, at, actor)

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
