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


_TAKE_HEAD = "INSERT INTO account_sequences AS s (account, last_seq) VALUES "
_TAKE_TAIL = (
    " ON CONFLICT (account) DO UPDATE SET last_seq = s.last_seq + excluded.last_seq"
    " RETURNING account, last_seq"
)


async def take_numbers(conn: DriverSQL, accounts: Sequence[str]) -> list[int]:
    """SQLite, inside the transaction that writes the events: the number of each event,
    given as its account (an account's events take its next numbers in the order they
    come), from one upsert of ``account_sequences``."""
    counts = Counter(accounts)
    marks = ", ".join("(?, ?)" for _ in counts)
    flat = [value for account, n in counts.items() for value in (account, n)]
    rows = await conn.fetch(_TAKE_HEAD + marks + _TAKE_TAIL, flat)
    next_seq = {account: int(last) - counts[account] + 1 for account, last in rows}
    seqs = []
    for account in accounts:
        seqs.append(next_seq[account])
        next_seq[account] += 1
    return seqs
