"""Execution reports read back from the order log: the history every stream is repaired
from, and ``GET /v1/executions``. A report is rebuilt from its event, the order's own row
and the fill, exactly as it was streamed (``Execution.of``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.domain.executions import Execution
from app.domain.status import OrderStatus
from app.storage.sql import tables as t
from app.storage.sql.rows import order_from_row

_e, _o, _f = t.order_events, t.orders, t.fills


# An event's report: the event, the order's own row and the fill, if any.
REPORTS = select(
    _o,
    _e.c.id.label("e_id"),
    _e.c.seq.label("e_seq"),
    _e.c.from_status.label("e_from"),
    _e.c.to_status.label("e_to"),
    _e.c.reason.label("e_reason"),
    _e.c.exec_id.label("e_exec_id"),
    _e.c.at.label("e_at"),
    _e.c.cum_qty.label("e_cum_qty"),
    _e.c.avg_price.label("e_avg_price"),
    _e.c.position_qty.label("e_position_qty"),
    _f.c.qty.label("f_qty"),
    _f.c.price.label("f_price"),
).select_from(_e.join(_o, _o.c.id == _e.c.order_id).outerjoin(_f, _f.c.exec_id == _e.c.exec_id))


def report_of(row: Mapping[Any, Any]) -> Execution:
    """The report of a row of ``REPORTS`` (values converted by its columns)."""
    return Execution.of(
        order_from_row(row),
        seq=row["e_seq"],
        from_status=None if row["e_from"] is None else OrderStatus(row["e_from"]),
        to_status=OrderStatus(row["e_to"]),
        reason=row["e_reason"],
        exec_id=row["e_exec_id"],
        at=row["e_at"],
        cum_qty=row["e_cum_qty"],
        avg_price=row["e_avg_price"],
        position_qty=row["e_position_qty"],
        last_qty=row["f_qty"],
        last_price=row["f_price"],
    )


class ExecutionLog:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._after = REPORTS.order_by(_e.c.seq)

    async def after(self, account: str, seq: int, limit: int) -> list[Execution]:
        """The account's reports after ``seq``, oldest first, at most ``limit``."""
        return await self._reports(
            self._after.where(_e.c.account == account, _e.c.seq > seq).limit(limit)
        )

    async def _reports(self, query: Select[Any]) -> list[Execution]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [report_of(row) for row in rows]

    async def newest(self, accounts: Iterable[str] | None = None) -> dict[str, int]:
        """Each account's newest report number: of every account that has one when
        ``accounts`` is None, else of each one named (0: none yet)."""
        query = select(t.account_sequences.c.account, t.account_sequences.c.last_seq)
        named = None if accounts is None else list(accounts)
        if named is not None:
            query = query.where(t.account_sequences.c.account.in_(named))
        async with self._engine.connect() as conn:
            known = {account: last for account, last in (await conn.execute(query)).all()}
        return known if named is None else {account: known.get(account, 0) for account in named}
