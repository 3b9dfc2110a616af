"""Where the order log's plain SQL runs: the driver's own connection, behind two calls.

SQLite: the stdlib connection, driven on the event loop (a batch is microseconds of SQLite
work; see ``OrderLog._execute_sqlite``). PostgreSQL: the asyncpg connection the writer
holds, each call one round trip (``executemany`` sends all its rows in one), with none of
SQLAlchemy's cursor adaptation or transaction bookkeeping in between.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Protocol

import asyncpg


class DriverSQL(Protocol):
    async def fetch(self, statement: str, parameters: Sequence[Any]) -> list[tuple[Any, ...]]:
        """The rows ``statement`` selects, as tuples of the driver's values."""
        ...

    async def executemany(self, statement: str, rows: list[tuple[Any, ...]]) -> None:
        """``statement`` once per row."""
        ...


class SqliteSQL:
    __slots__ = ("raw",)

    def __init__(self, raw: sqlite3.Connection) -> None:
        self.raw = raw

    async def fetch(self, statement: str, parameters: Sequence[Any]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self.raw.execute(statement, parameters).fetchall()
        return rows

    async def executemany(self, statement: str, rows: list[tuple[Any, ...]]) -> None:
        self.raw.executemany(statement, rows)


class AsyncpgSQL:
    __slots__ = ("raw",)

    def __init__(self, raw: asyncpg.Connection) -> None:
        self.raw = raw

    async def fetch(self, statement: str, parameters: Sequence[Any]) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in await self.raw.fetch(statement, *parameters)]

    async def executemany(self, statement: str, rows: list[tuple[Any, ...]]) -> None:
        await self.raw.executemany(statement, rows)
