"""Execution reports in Redis Streams: the fan-out, never the record (the order log is).

Each account's reports go to its own stream under their own number as entry id
(``<seq>-0``), in order and with no hole although several processes publish them
(``exec_publish.lua`` holds a report that arrives before the one ahead of it), and
publishing again is harmless (it skips what the stream has passed); every report also
goes to one stream of all accounts, for subscribers of them all. Streams keep a configured length
(``MAXLEN ~``) and age (``trim``); what they no longer hold is read from the order log.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from app.redisio.multiplexed import MultiplexedRedis, pairs
from app.storage.redis.keys import StreamKeys
from app.storage.redis.scripts import load_script

PACKAGE = "app.storage.redis"


class PublishedReport(NamedTuple):
    account: str
    seq: int
    at_ms: int
    payload: str  # the report's JSON frame


class StreamEntry(NamedTuple):
    account: str
    seq: int
    payload: bytes


class ExecutionStreamStore:
    def __init__(self, redis: MultiplexedRedis, max_length: int, max_length_all: int) -> None:
        self._redis = redis
        self._max_length = max_length
        self._max_length_all = max_length_all
        self._publish = load_script(redis, PACKAGE, "exec_publish")
        self._trim = load_script(redis, PACKAGE, "exec_trim")

    async def publish(self, reports: Sequence[PublishedReport], *, repair: bool = False) -> None:
        """Append reports (each account's in ascending seq): two round trips. ``repair``:
        from the order log, which may jump over a hole no longer worth filling."""
        by_account: dict[str, list[str | int]] = {}
        for r in reports:
            args = by_account.setdefault(r.account, [self._max_length, int(repair)])
            args.extend((r.seq, r.at_ms, r.payload))
        calls = [
            ([StreamKeys.executions(a), StreamKeys.held(a)], args) for a, args in by_account.items()
        ]
        await self._publish.many(calls)
        await self._redis.execute_many(
            [
                (
                    "XADD",
                    StreamKeys.all_executions,
                    "MAXLEN",
                    "~",
                    self._max_length_all,
                    "*",
                    "a",
                    r.account,
                    "s",
                    r.seq,
                    "t",
                    r.at_ms,
                    "r",
                    r.payload,
                )
                for r in reports
            ]
        )

    async def after(self, account: str, seq: int, count: int) -> list[StreamEntry]:
        """Up to ``count`` of the account's entries after ``seq``, as the stream holds them
        (it may have lost some: the caller checks the numbers)."""
        key = StreamKeys.executions(account)
        entries = await self._redis.execute("XRANGE", key, f"{seq + 1}-0", "+", "COUNT", count)
        return [StreamEntry(account, _seq(entry_id), pairs(f)[b"r"]) for entry_id, f in entries]

    async def newest(self, accounts: Iterable[str]) -> dict[str, int]:
        """Each account's newest seq in its stream (0: none)."""
        names = list(accounts)
        replies = await self._redis.execute_many(
            [("XREVRANGE", StreamKeys.executions(a), "+", "-", "COUNT", 1) for a in names]
        )
        return {a: _seq(r[0][0]) if r else 0 for a, r in zip(names, replies, strict=True)}

    async def newest_all_id(self) -> bytes:
        """The id of the newest entry of the all-accounts stream (``0-0``: none)."""
        reply = await self._redis.execute(
            "XREVRANGE", StreamKeys.all_executions, "+", "-", "COUNT", 1
        )
        return reply[0][0] if reply else b"0-0"

    async def drop(self, account: str) -> None:
        """Forget the account's stream (it is rebuilt from the order log)."""
        await self._redis.execute("DEL", StreamKeys.executions(account), StreamKeys.held(account))

    async def trim(self, accounts: Iterable[str], cutoff_ms: int) -> None:
        """Drop what is older than ``cutoff_ms`` (retention by age)."""
        await self._trim.many([([StreamKeys.executions(a)], [cutoff_ms]) for a in accounts])
        await self._redis.execute("XTRIM", StreamKeys.all_executions, "MINID", cutoff_ms)


def _seq(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[0])


def entry_of(key: bytes, entry_id: bytes, fields: list[bytes]) -> StreamEntry:
    """An entry read from either kind of stream."""
    values = pairs(fields)
    name = key.decode()
    if name == StreamKeys.all_executions:
        return StreamEntry(values[b"a"].decode(), int(values[b"s"]), values[b"r"])
    return StreamEntry(StreamKeys.account_of(name), _seq(entry_id), values[b"r"])
