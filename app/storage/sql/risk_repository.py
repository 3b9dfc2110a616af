"""Risk controls in SQL: limits per account, kill switches, and their audit trail."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, union, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.domain.risk import RiskLimits
from app.storage.sql import tables as t

GLOBAL = "global"
ACCOUNT = "account"


@dataclass(frozen=True, slots=True)
class KillSwitchRow:
    scope: str
    account: str
    active: bool
    generation: int
    updated_at: datetime
    updated_by: str


class RiskRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def limits(self, account: str) -> RiskLimits | None:
        query = select(t.risk_limits.c.limits).where(t.risk_limits.c.account == account)
        async with self._engine.connect() as conn:
            doc = (await conn.execute(query)).scalar_one_or_none()
        return None if doc is None else RiskLimits.model_validate_json(doc)

    async def put_limits(self, account: str, limits: RiskLimits, actor: str, at: datetime) -> None:
        """Replace the account's limits and record who did it, in one transaction."""
        async with self._engine.begin() as conn:
            await self._hold_row(conn, account, limits, actor, at)
            await self._write_limits(conn, account, limits, actor, at)

    async def change_limits(
        self,
        account: str,
        change: Callable[[RiskLimits], RiskLimits],
        initial: RiskLimits,
        actor: str,
        at: datetime,
    ) -> RiskLimits:
        """Write ``change(the account's limits)`` (``initial`` if it has none), read and
        written in one transaction that holds the row from the start: concurrent changes
        apply one after the other."""
        async with self._engine.begin() as conn:
            await self._hold_row(conn, account, initial, actor, at)
            query = select(t.risk_limits.c.limits).where(t.risk_limits.c.account == account)
            doc = (await conn.execute(query)).scalar_one()
            limits = change(RiskLimits.model_validate_json(doc))
            await self._write_limits(conn, account, limits, actor, at)
        return limits

    async def _hold_row(
        self, conn: AsyncConnection, account: str, initial: RiskLimits, actor: str, at: datetime
    ) -> None:
        """The account's row, created with ``initial`` if missing, and held by this
        transaction (SQLite's write lock, PostgreSQL's row lock). Two first changes of an
        account would otherwise both find no row: one failing its insert, or the later
        overwriting the first with what it read before it."""
        dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        await conn.execute(
            dialect_insert(t.risk_limits)
            .values(
                account=account, limits=initial.model_dump_json(), updated_at=at, updated_by=actor
            )
            .on_conflict_do_nothing(index_elements=["account"])
        )
        await conn.execute(
            update(t.risk_limits)
            .where(t.risk_limits.c.account == account)
            .values(updated_at=t.risk_limits.c.updated_at)
        )

    async def _write_limits(
        self, conn: AsyncConnection, account: str, limits: RiskLimits, actor: str, at: datetime
    ) -> None:
        doc = limits.model_dump_json()
        await conn.execute(
            update(t.risk_limits)
            .where(t.risk_limits.c.account == account)
            .values(limits=doc, updated_at=at, updated_by=actor)
        )
        await _audit(conn, at, actor, "limits", ACCOUNT, account, json.loads(doc))

    async def set_kill_switch(
        self, scope: str, account: str, active: bool, actor: str, at: datetime, detail: Any
    ) -> int:
        """Record the switch and its audit row; returns the generation (the audit row's id),
        which orders the settings copied to Redis."""
        async with self._engine.begin() as conn:
            generation = await _audit(conn, at, actor, "kill_switch", scope, account, detail)
            values = {
                "active": active,
                "generation": generation,
                "updated_at": at,
                "updated_by": actor,
            }
            changed = await conn.execute(
                update(t.kill_switches)
                .where(t.kill_switches.c.scope == scope, t.kill_switches.c.account == account)
                .values(**values)
            )
            if changed.rowcount == 0:
                await conn.execute(
                    insert(t.kill_switches).values(scope=scope, account=account, **values)
                )
        return generation

    async def kill_switches(self) -> list[KillSwitchRow]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(t.kill_switches))).mappings().all()
        return [
            KillSwitchRow(
                r["scope"],
                r["account"],
                r["active"],
                r["generation"],
                r["updated_at"],
                r["updated_by"],
            )
            for r in rows
        ]

    async def kill_state(self, account: str) -> tuple[tuple[bool, int], tuple[bool, int]]:
        """((account switch on, generation), (global switch on, generation))."""
        query = select(t.kill_switches).where(
            ((t.kill_switches.c.scope == ACCOUNT) & (t.kill_switches.c.account == account))
            | (t.kill_switches.c.scope == GLOBAL)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        found = {r["scope"]: (bool(r["active"]), int(r["generation"])) for r in rows}
        return found.get(ACCOUNT, (False, 0)), found.get(GLOBAL, (False, 0))

    async def audit_trail(self, limit: int = 100) -> list[dict[str, Any]]:
        query = select(t.risk_audit).order_by(t.risk_audit.c.id.desc()).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [dict(r) | {"detail": json.loads(r["detail"])} for r in rows]

    async def known_accounts(self) -> set[str]:
        """Every account that holds a key, has limits or has orders."""
        query = union(
            select(t.api_keys.c.account),
            select(t.risk_limits.c.account),
            select(t.orders.c.account).distinct(),
        )
        async with self._engine.connect() as conn:
            return {account for (account,) in (await conn.execute(query)).all()}


async def _audit(
    conn: AsyncConnection,
    at: datetime,
    actor: str,
    action: str,
    scope: str,
    account: str,
    detail: Any,
) -> int:
    result = await conn.execute(
        insert(t.risk_audit).values(
            at=at,
            actor=actor,
            action=action,
            scope=scope,
            account=account,
            detail=json.dumps(detail, default=str),
        )
    )
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])
