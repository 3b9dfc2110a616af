"""Order events as execution reports: their rows, and their numbers per account.

Every writer of order events (the gateway's group commit, its PostgreSQL statements, the
applier) collects a batch's events and writes them at once. Each account's events are
numbered 1, 2, 3, ... from ``account_sequences``, so that a number is never visible before
a smaller one: whoever sees report n of an account can read 1..n-1 from the log.

On SQLite the batch takes its numbers in the transaction that writes it (one statement):
SQLite's one write lock already orders every process's commits, so this costs nothing
more. On PostgreSQL events are committed unnumbered and numbered just after, by one process
(``committed_reports``): a number taken inside the commit held the account's other writers
for that commit's WAL flush, one commit at a time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Dialect

from app.domain.orders import Order
from app.domain.status import OrderStatus
from app.storage.sql.drivers import DriverSQL
from app.storage.sql.rows import EventRow


def move_event(order: Order, previous: OrderStatus | None, reason: str | None) -> EventRow:
    """The event of the gateway's own move of ``order`` (already moved) from ``previous``
    (None: its creation)."""
    at = order.created_at if previous is None else order.updated_at
    return EventRow(
        order_id=order.id,
        account=order.account,
        from_status=None if previous is None else previous.value,
        to_status=order.status.value,
        reason=reason,
        exec_id=None,
        at=at,
        seq=None,
        cum_qty=order.filled_qty,
        avg_price=order.avg_fill_price,
        position_qty=None,
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


def number(accounts: Sequence[str], last: dict[str, int]) -> list[int]:
    """The number of each event, given as its account, and each account's ``last`` number
    after the batch: an account's events take its numbers in the order they come."""
    counts = Counter(accounts)
    next_seq = {account: last[account] - n + 1 for account, n in counts.items()}
    seqs = []
    for account in accounts:
        seqs.append(next_seq[account])
        next_seq[account] += 1
    return seqs
