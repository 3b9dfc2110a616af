"""Reading and (to stage a crash) writing a gateway's order log directly."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import asyncpg
from sqlalchemy import make_url, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.domain.orders import Order
from app.storage.sql.database import POSTGRES_SETTINGS, create_engine
from app.storage.sql.drivers import AsyncpgSQL, DriverSQL, SqliteSQL
from app.storage.sql.rows import order_from_row
from app.storage.sql.statements import Statements
from app.storage.sql.tables import order_events, orders


@asynccontextmanager
async def _connected(database_url: str) -> AsyncIterator[AsyncConnection]:
    """A connection in a transaction that commits at the end, on an engine of its own."""
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            yield conn
    finally:
        await engine.dispose()


async def order_story(database_url: str, order_id: str) -> list[tuple[str | None, str, str | None]]:
    """The order's events, oldest first: (from status, to status, reason)."""
    async with _connected(database_url) as conn:
        rows = await conn.execute(
            select(order_events.c.from_status, order_events.c.to_status, order_events.c.reason)
            .where(order_events.c.order_id == order_id)
            .order_by(order_events.c.id)
        )
        return [(row.from_status, row.to_status, row.reason) for row in rows]


async def account_events(database_url: str, account: str) -> list[tuple[int, str, int | None]]:
    """The account's events in the order they were inserted: (id, order_id, seq)."""
    async with _connected(database_url) as conn:
        rows = await conn.execute(
            select(order_events.c.id, order_events.c.order_id, order_events.c.seq)
            .where(order_events.c.account == account)
            .order_by(order_events.c.id)
        )
        return [(row.id, row.order_id, row.seq) for row in rows]


async def force_status(database_url: str, order_id: str, status: str, at: datetime) -> None:
    """Write an order's status as a gateway that died mid-way would have left it."""
    async with _connected(database_url) as conn:
        await conn.execute(
            update(orders).where(orders.c.id == order_id).values(status=status, updated_at=at)
        )


async def read_order(database_url: str, order_id: str) -> Order:
    """The order as its row holds it."""
    async with _connected(database_url) as conn:
        row = (await conn.execute(select(orders).where(orders.c.id == order_id))).one()
        return order_from_row(row._mapping)


async def read_ack(database_url: str, order_id: str) -> tuple[int | None, str | None]:
    """The answer the order log keeps for the order: (status, body)."""
    async with _connected(database_url) as conn:
        query = select(orders.c.ack_status, orders.c.ack_body).where(orders.c.id == order_id)
        row = (await conn.execute(query)).one()
        return row.ack_status, row.ack_body


@asynccontextmanager
async def driver_connection(database_url: str) -> AsyncIterator[tuple[Statements, DriverSQL]]:
    """The order log's statements and a driver connection as its writer has them (on
    PostgreSQL with the gateway's server settings), in a transaction committed at the end."""
    engine = create_engine(database_url)
    statements = Statements(engine.dialect)
    await engine.dispose()  # only its dialect was wanted
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        raw = sqlite3.connect(url.database or "", isolation_level=None)
        try:
            raw.execute("PRAGMA foreign_keys=ON")
            raw.execute("BEGIN IMMEDIATE")
            yield statements, SqliteSQL(raw)
            raw.execute("COMMIT")
        finally:
            raw.close()
        return
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn, server_settings=POSTGRES_SETTINGS)
    try:
        async with conn.transaction():
            yield statements, AsyncpgSQL(conn)
    finally:
        await conn.close()


async def key_id_of(database_url: str, key: str) -> str:
    """The id of an API key (``ordergate keys create`` prints only the key)."""
    from app.services.auth import hash_key
    from app.storage.sql.tables import api_keys

    async with _connected(database_url) as conn:
        found = await conn.scalar(select(api_keys.c.id).where(api_keys.c.key_hash == hash_key(key)))
    assert isinstance(found, str)
    return found
