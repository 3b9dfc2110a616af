"""Execution reports in Redis Streams: the fan-out, never the record (the order log is).

Each account's reports go to its own stream under their own number as entry id
(``<seq>-0``), in order and with no hole although several processes publish them
(``exec_publish.lua`` holds a report that arrives before the one ahead of it), and
publishing again is harmless (it skips what the stream has passed). Streams keep a
configured length (``MAXLEN ~``) and age (``trim``); what they no longer hold is read from
the order log.

An entry holds the report's values, compactly (``pack``), not its JSON: the committing
process, on the order path's event loop, does not render it; a process with subscribers
renders each report once for all of them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

import orjson
from redis.exceptions import ResponseError

from app.domain.executions import Execution, ExecutionEvent
from app.domain.orders import Order, OrderType, Side, TimeInForce
from app.domain.status import OrderStatus
from app.redisio.multiplexed import MultiplexedRedis, pairs
from app.storage.redis.keys import StreamKeys
from app.storage.redis.scripts import load_script

PACKAGE = "app.storage.redis"


class StreamEntry(NamedTuple):
    account: str
    seq: int
    execution: Execution


class ExecutionStreamStore:
    def __init__(self, redis: MultiplexedRedis, max_length: int) -> None:
        self._redis = redis
        self._max_length = max_length
        self._publish = load_script(redis, PACKAGE, "exec_publish")
        self._trim = load_script(redis, PACKAGE, "exec_trim")

    async def publish(self, executions: Sequence[Execution], *, repair: bool = False) -> None:
        """Append reports (each account's in ascending seq): one round trip. ``repair``:
        from the order log, which may jump over a hole no longer worth filling."""
        by_account: dict[str, list[str | int | bytes]] = {}
        for e in executions:
            args = by_account.setdefault(e.account, [self._max_length, int(repair)])
            args.extend((e.seq, int(e.at.timestamp() * 1000), pack(e)))
        await self._publish.many(
            ([StreamKeys.executions(a), StreamKeys.held(a)], args) for a, args in by_account.items()
        )

    async def after(self, account: str, seq: int, count: int) -> list[StreamEntry]:
        """Up to ``count`` of the account's entries after ``seq``, as the stream holds them
        (it may have lost some: the caller checks the numbers)."""
        key = StreamKeys.executions(account)
        entries = await self._redis.execute("XRANGE", key, f"{seq + 1}-0", "+", "COUNT", count)
        return [entry_of(key.encode(), entry_id, fields) for entry_id, fields in entries]

    async def newest(self, accounts: Iterable[str]) -> dict[str, int]:
        """Each account's newest seq in its stream (0: none), as ``exec_publish.lua`` sees
        it: a stream emptied by trimming still knows the last id it gave."""
        names = list(accounts)
        replies = await self._redis.execute_many(
            [("XREVRANGE", StreamKeys.executions(a), "+", "-", "COUNT", 1) for a in names]
        )
        newest = {a: _seq(r[0][0]) if r else 0 for a, r in zip(names, replies, strict=True)}
        for account in [a for a, seq in newest.items() if seq == 0]:
            with contextlib.suppress(ResponseError):  # no such stream
                info = await self._redis.execute("XINFO", "STREAM", StreamKeys.executions(account))
                newest[account] = _seq(pairs(info)[b"last-generated-id"])
        return newest

    async def drop(self, account: str) -> None:
        """Forget the account's stream (it is rebuilt from the order log)."""
        await self._redis.execute("DEL", StreamKeys.executions(account), StreamKeys.held(account))

    async def trim(self, accounts: Iterable[str], cutoff_ms: int) -> None:
        """Drop what is older than ``cutoff_ms`` (retention by age)."""
        await self._trim.many([([StreamKeys.executions(a)], [cutoff_ms]) for a in accounts])


def _seq(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[0])


def entry_of(key: bytes, entry_id: bytes, fields: list[bytes]) -> StreamEntry:
    """An entry as ``XRANGE`` or ``XREAD`` gives it."""
    execution = unpack(pairs(fields)[b"r"])
    return StreamEntry(StreamKeys.account_of(key.decode()), _seq(entry_id), execution)


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _decimal(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def pack(e: Execution) -> bytes:
    """A report's values as a JSON array: exact decimals as text, times in ISO 8601."""
    o = e.order
    return orjson.dumps(
        [
            e.seq,
            e.exec_id,
            e.event.value,
            o.id,
            o.client_order_id,
            o.account,
            o.symbol,
            o.side.value,
            str(o.qty),
            o.type.value,
            _text(o.limit_price),
            o.time_in_force.value,
            o.status.value,
            str(o.filled_qty),
            _text(o.avg_fill_price),
            o.created_at.isoformat(),
            o.reject_reason,
            _text(e.last_qty),
            _text(e.last_price),
            _text(e.position_qty),
            e.reason,
            e.at.isoformat(),
        ]
    )


def unpack(packed: bytes) -> Execution:
    (
        seq,
        exec_id,
        event,
        order_id,
        client_order_id,
        account,
        symbol,
        side,
        qty,
        order_type,
        limit_price,
        time_in_force,
        status,
        filled_qty,
        avg_fill_price,
        created_at,
        reject_reason,
        last_qty,
        last_price,
        position_qty,
        reason,
        at,
    ) = orjson.loads(packed)
    when = datetime.fromisoformat(at)
    order = Order(
        id=order_id,
        client_order_id=client_order_id,
        account=account,
        symbol=symbol,
        side=Side(side),
        qty=Decimal(qty),
        type=OrderType(order_type),
        limit_price=_decimal(limit_price),
        time_in_force=TimeInForce(time_in_force),
        status=OrderStatus(status),
        created_at=datetime.fromisoformat(created_at),
        updated_at=when,
        filled_qty=Decimal(filled_qty),
        avg_fill_price=_decimal(avg_fill_price),
        reject_reason=reject_reason,
    )
    return Execution(
        account=account,
        seq=seq,
        exec_id=exec_id,
        event=ExecutionEvent(event),
        order=order,
        last_qty=_decimal(last_qty),
        last_price=_decimal(last_price),
        position_qty=_decimal(position_qty),
        reason=reason,
        at=when,
    )
