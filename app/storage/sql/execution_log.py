"""Execution reports read back from the order log: the history every stream is repaired
from, and ``GET /v1/executions``. A report is rebuilt from its event, the order's own row
and the fill, exactly as it was streamed (``Execution.of``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.domain.executions import Execution
from app.domain.status import OrderStatus
from app.storage.sql import tables as t
from app.storage.sql.rows import OrderRow, order_from_values
from app.storage.sql.tables import decimal_from_db, utc_from_db

_e, _o, _f = t.order_events, t.orders, t.fills


# An event's report: the order's own row (in ``OrderRow``'s order), the event, the fill.
_EVENT_COLUMNS = {
    "e_id": "id",
    "e_seq": "seq",
    "e_from": "from_status",
    "e_to": "to_status",
    "e_reason": "reason",
    "e_exec_id": "exec_id",
    "e_at": "at",
    "e_cum_qty": "cum_qty",
    "e_avg_price": "avg_price",
    "e_position_qty": "position_qty",
}
REPORTS = select(
    *(_o.c[name] for name in OrderRow._fields),
    *(_e.c[column].label(label) for label, column in _EVENT_COLUMNS.items()),
    _f.c.qty.label("f_qty"),
    _f.c.price.label("f_price"),
).select_from(_e.join(_o, _o.c.id == _e.c.order_id).outerjoin(_f, _f.c.exec_id == _e.c.exec_id))
# The same, as plain SQL of the event table ``n``, ``orders o`` and ``fills f`` joined.
REPORT_COLUMNS_SQL = ", ".join(
    [
        *(f"o.{name}" for name in OrderRow._fields),
        *(f"n.{column} AS {label}" for label, column in _EVENT_COLUMNS.items()),
        "f.qty AS f_qty",
        "f.price AS f_price",
    ]
)
REPORT_JOINS_SQL = (
    "JOIN orders AS o ON o.id = n.order_id LEFT JOIN fills AS f ON f.exec_id = n.exec_id"
)
_WIDTH = len(OrderRow._fields)
REPORT_ID = _WIDTH  # where a row of ``REPORTS`` has its event's id


def report_of(values: Sequence[Any]) -> Execution:
    """The report of a row of ``REPORTS``: the driver's raw values or converted ones."""
    order = order_from_values(OrderRow._make(values[:_WIDTH]))
    (_, seq, from_status, to_status, reason, exec_id, at, cum_qty, avg_price, position_qty,
     last_qty, last_price) = values[_WIDTH:]  # fmt: skip
    return Execution.of(
        order,
        seq=int(seq),
        from_status=None if from_status is None else OrderStatus(from_status),
        to_status=OrderStatus(to_status),
        reason=reason,
        exec_id=exec_id,
        at=utc_from_db(at),
        cum_qty=decimal_from_db(cum_qty),
        avg_price=decimal_from_db(avg_price),
        position_qty=decimal_from_db(position_qty),
        last_qty=decimal_from_db(last_qty),
        last_price=decimal_from_db(last_price),
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
            rows = (await conn.execute(query)).all()
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
