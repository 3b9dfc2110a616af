"""Read side of the SQL store: orders, positions and API keys, scoped by account."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.domain.orders import Order, Position
from app.domain.status import OPEN_STATUSES, OrderStatus
from app.storage.sql import tables as t
from app.storage.sql.rows import order_from_row


@dataclass(frozen=True, slots=True)
class StoredAck:
    """An order as stored for idempotent replay: its request hash and the answer given."""

    order: Order
    ack_status: int | None
    ack_body: str | None


@dataclass(frozen=True, slots=True)
class OrderProgress:
    status: OrderStatus
    filled_qty: Decimal


class OrderRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, account: str, order_id: str) -> Order | None:
        query = select(t.orders).where(t.orders.c.id == order_id, t.orders.c.account == account)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else order_from_row(row)

    async def get_ack(self, account: str, client_order_id: str) -> StoredAck | None:
        query = select(t.orders).where(
            t.orders.c.account == account, t.orders.c.client_order_id == client_order_id
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is None:
            return None
        return StoredAck(order_from_row(row), row["ack_status"], row["ack_body"])

    async def list_orders(
        self,
        account: str,
        *,
        statuses: list[OrderStatus] | None = None,
        symbol: str | None = None,
        before_id: str | None = None,
        limit: int = 100,
    ) -> list[Order]:
        """Newest first (ids are time-ordered); ``before_id`` is the keyset cursor."""
        query = select(t.orders).where(t.orders.c.account == account)
        if statuses:
            query = query.where(t.orders.c.status.in_([s.value for s in statuses]))
        if symbol:
            query = query.where(t.orders.c.symbol == symbol)
        if before_id:
            query = query.where(t.orders.c.id < before_id)
        query = query.order_by(t.orders.c.id.desc()).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [order_from_row(row) for row in rows]

    async def open_orders(self, account: str) -> list[Order]:
        query = select(t.orders).where(
            t.orders.c.account == account,
            t.orders.c.status.in_([s.value for s in OPEN_STATUSES]),
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query.order_by(t.orders.c.id))).mappings().all()
        return [order_from_row(row) for row in rows]

    async def live_orders(self) -> list[Order]:
        """Every account's orders the broker acknowledged and has not ended."""
        live = (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED, OrderStatus.PENDING_CANCEL)
        query = select(t.orders).where(t.orders.c.status.in_([s.value for s in live]))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query.order_by(t.orders.c.id))).mappings().all()
        return [order_from_row(row) for row in rows]

    async def stale_unresolved(self, older_than: datetime) -> list[Order]:
        """Orders whose placement (or cancel) outcome we never learned."""
        unresolved = (OrderStatus.PENDING_NEW, OrderStatus.UNKNOWN, OrderStatus.PENDING_CANCEL)
        query = select(t.orders).where(
            t.orders.c.status.in_([s.value for s in unresolved]),
            t.orders.c.updated_at < older_than,
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query.order_by(t.orders.c.id))).mappings().all()
        return [order_from_row(row) for row in rows]

    async def positions(self, account: str) -> list[Position]:
        query = (
            select(t.positions)
            .where(t.positions.c.account == account)
            .order_by(t.positions.c.symbol)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            Position(r["account"], r["symbol"], r["qty"], r["avg_price"], r["realized_pnl"])
            for r in rows
        ]

    async def count_open(self, account: str) -> int:
        query = (
            select(func.count())
            .select_from(t.orders)
            .where(
                t.orders.c.account == account,
                t.orders.c.status.in_([s.value for s in OPEN_STATUSES]),
            )
        )
        async with self._engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def progress(self, account: str, client_order_ids: list[str]) -> dict[str, OrderProgress]:
        """Status and filled quantity of the account's orders with these ids (those it has)."""
        query = select(t.orders.c.client_order_id, t.orders.c.status, t.orders.c.filled_qty).where(
            t.orders.c.account == account, t.orders.c.client_order_id.in_(client_order_ids)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {
            row.client_order_id: OrderProgress(OrderStatus(row.status), row.filled_qty)
            for row in rows
        }

    async def stream_cursor(self, name: str) -> str | None:
        query = select(t.stream_cursors.c.position).where(t.stream_cursors.c.name == name)
        async with self._engine.connect() as conn:
            value = (await conn.execute(query)).scalar_one_or_none()
        return None if value is None else str(value)


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    id: str
    account: str
    role: str
    revoked: bool


class ApiKeyRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(
        self, key_id: str, key_hash: str, account: str, role: str, at: datetime
    ) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                t.api_keys.insert().values(
                    id=key_id, key_hash=key_hash, account=account, role=role, created_at=at
                )
            )

    async def find(self, key_hash: str) -> ApiKeyRecord | None:
        query = select(t.api_keys).where(t.api_keys.c.key_hash == key_hash)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is None:
            return None
        return ApiKeyRecord(row["id"], row["account"], row["role"], row["revoked_at"] is not None)

    async def revoke(self, key_id: str, at: datetime) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(t.api_keys)
                .where(t.api_keys.c.id == key_id, t.api_keys.c.revoked_at.is_(None))
                .values(revoked_at=at)
            )
        return result.rowcount == 1
