"""Orders as the tests send them, and what the gateway answers and stores of them."""

from __future__ import annotations

import secrets
from decimal import Decimal
from typing import Any

import httpx

from tests.conftest import Gateway, wait_for


def coid() -> str:
    return f"t-{secrets.token_hex(6)}"


def market(symbol: str = "AAPL", side: str = "buy", qty: str = "1", **extra: Any) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "side": side,
        "qty": qty,
        "type": "market",
        "client_order_id": coid(),
        # Tests here repeat orders on purpose; the duplicate window has its own tests.
        "allow_duplicate": True,
        **extra,
    }


def limit(
    price: str, symbol: str = "MSFT", side: str = "buy", qty: str = "1", tif: str = "day"
) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "side": side,
        "qty": qty,
        "type": "limit",
        "limit_price": price,
        "time_in_force": tif,
        "client_order_id": coid(),
        "allow_duplicate": True,
    }


async def order_status(client: httpx.AsyncClient, order_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/orders/{order_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def eventually_status(
    client: httpx.AsyncClient, order_id: str, status: str, within: float = 5.0
) -> dict[str, Any]:
    async def reached() -> bool:
        return (await order_status(client, order_id))["status"] == status

    await wait_for(reached, within=within)
    return await order_status(client, order_id)


async def order_events(gateway: Gateway, order_id: str) -> list[tuple[str | None, str]]:
    """The order's transitions as the append-only event table holds them, oldest first."""
    from sqlalchemy import select

    from app.storage.sql.database import create_engine
    from app.storage.sql.tables import order_events as events

    engine = create_engine(gateway.database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(events.c.from_status, events.c.to_status)
                .where(events.c.order_id == order_id)
                .order_by(events.c.id)
            )
            return [(row.from_status, row.to_status) for row in rows]
    finally:
        await engine.dispose()


def resting_buy(price: str, qty: str) -> dict[str, Any]:
    """A good-till-canceled AAPL buy (AAPL's reference price is far above)."""
    return limit(price, symbol="AAPL", qty=qty, tif="gtc")


async def redis_position(client: httpx.AsyncClient, symbol: str) -> tuple[Decimal, Decimal]:
    """(position, open buys) of ``symbol`` as the risk state in Redis holds them."""
    [state] = (await client.get("/v1/risk/state")).json()["accounts"]
    for exposure in state["exposure"]:
        if exposure["symbol"] == symbol:
            return Decimal(exposure["position"]), Decimal(exposure["open_buy"])
    return Decimal(0), Decimal(0)


async def database_position(client: httpx.AsyncClient, symbol: str) -> Decimal:
    positions: list[dict[str, Any]] = (await client.get("/v1/positions")).json()
    return next((Decimal(p["qty"]) for p in positions if p["symbol"] == symbol), Decimal(0))
