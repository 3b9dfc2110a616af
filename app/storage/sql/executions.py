"""Order events as execution reports: numbered per account when committed, and read back.

Every writer of order events (the gateway's group commit, its PostgreSQL statements, the
applier) collects a batch's events, takes each account's next numbers from
``account_sequences`` in the transaction that writes them (one statement for the batch),
and writes them at once. The row lock that statement takes holds the account's other
writers until this transaction commits, so a number is never visible before a smaller one:
whoever sees report n of an account can read 1..n-1 from the log.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import Dialect

from app.domain.executions import Execution
from app.domain.orders import Order
from app.domain.status import OrderStatus
from app.storage.sql.drivers import DriverSQL
from app.storage.sql.rows import EventRow


class PendingEvent(NamedTuple):
    """An event to write, with what its report needs beyond the row: the order (after the
    event) and the fill it records, if any."""

    row: EventRow  # seq 0 until numbered
    order: Order
    last_qty: Decimal | None = None
    last_price: Decimal | None = None


def move_event(order: Order, previous: OrderStatus | None, reason: str | None) -> PendingEvent:
    """The event of the gateway's own move of ``order`` (already moved) from ``previous``
    (None: its creation)."""
    at = order.created_at if previous is None else order.updated_at
    row = EventRow(
        order_id=order.id,
        account=order.account,
        from_status=None if previous is None else previous.value,
        to_status=order.status.value,
        reason=reason,
        exec_id=None,
        at=at,
        seq=0,
        cum_qty=order.filled_qty,
        avg_price=order.avg_fill_price,
        position_qty=None,
    )
    return PendingEvent(row, order)


def execution_of(event: PendingEvent, seq: int) -> Execution:
    row = event.row
    return Execution.of(
        event.order,
        seq=seq,
        from_status=None if row.from_status is None else OrderStatus(row.from_status),
        to_status=OrderStatus(row.to_status),
        reason=row.reason,
        exec_id=row.exec_id,
        at=row.at,
        cum_qty=row.cum_qty,
        avg_price=row.avg_price,
        position_qty=row.position_qty,
        last_qty=event.last_qty,
        last_price=event.last_price,
    )


class SequenceTake:
    """Take the next ``n`` numbers of several accounts at once: one upsert, returning each
    account's last number taken. Accounts go in sorted order, so two writers' row locks
    are always taken in the same order and cannot deadlock."""

    def __init__(self, dialect: Dialect) -> None:
        self._postgres = dialect.name == "postgresql"
        update = " ON CONFLICT (account) DO UPDATE SET last_seq = s.last_seq + excluded.last_seq"
        self._array_sql = (
            "INSERT INTO account_sequences AS s (account, last_seq)"
            " SELECT * FROM unnest($1::varchar[], $2::bigint[]) ORDER BY 1"
            f"{update} RETURNING account, last_seq"
        )
        self._sqlite_head = "INSERT INTO account_sequences AS s (account, last_seq) VALUES "
        self._sqlite_tail = f"{update} RETURNING account, last_seq"

    async def run(self, conn: DriverSQL, counts: dict[str, int]) -> dict[str, int]:
        if not counts:
            return {}
        accounts = sorted(counts)
        if self._postgres:
            parameters: list[Any] = [accounts, [counts[a] for a in accounts]]
            rows = await conn.fetch(self._array_sql, parameters)
        else:
            marks = ", ".join("(?, ?)" for _ in accounts)
            flat = [value for a in accounts for value in (a, counts[a])]
            rows = await conn.fetch(self._sqlite_head + marks + self._sqlite_tail, flat)
        return {account: int(last) for account, last in rows}


def number(events: Sequence[PendingEvent], last: dict[str, int]) -> list[int]:
    """Each event's number, given each account's ``last`` number after the batch: an
    account's events take its numbers in the order they come."""
    counts = Counter(e.row.account for e in events)
    next_seq = {account: last[account] - n + 1 for account, n in counts.items()}
    seqs = []
    for event in events:
        account = event.row.account
        seqs.append(next_seq[account])
        next_seq[account] += 1
    return seqs


def counts_of(events: Sequence[PendingEvent]) -> dict[str, int]:
    return dict(Counter(e.row.account for e in events))
