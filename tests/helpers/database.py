"""Reading and (to stage a crash) writing a gateway's order log directly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.domain.orders import Order
from app.storage.sql.database import create_engine
from app.storage.sql.rows import order_from_row
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
