"""The migrations against a real database (SQLite, and PostgreSQL when it is set)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from app.storage.sql.database import create_engine
from app.storage.sql.tables import order_events, orders
from tests.conftest import REPO, DatabaseFactory, _backends

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def migrate(database_url: str, tmp_path: Path, revision: str = "head") -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERGATE_")}
    env |= {"DATABASE_URL": database_url, "ORDERGATE_DATA_DIR": str(tmp_path)}
    subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate", "--revision", revision],
        env=env,
        cwd=REPO,
        check=True,
        capture_output=True,
    )


def an_order(id_: str, status: str, reason: str | None) -> dict[str, object]:
    return {
        "id": id_,
        "account": "acct",
        "client_order_id": id_,
        "symbol": "AAPL",
        "side": "buy",
        "qty": Decimal(1),
        "type": "market",
        "limit_price": None,
        "time_in_force": "day",
        "status": status,
        "filled_qty": Decimal(0),
        "avg_fill_price": None,
        "reject_reason": reason,
        "request_hash": "h",
        "exec_seq": 0,
        "created_at": NOW,
        "updated_at": NOW,
    }


@pytest.mark.parametrize("backend", _backends())
async def test_orders_the_risk_checks_refused_become_denied_and_the_venues_stay_rejected(
    database_factory: DatabaseFactory, tmp_path: Path, backend: str
) -> None:
    url = database_factory.create(backend)
    migrate(url, tmp_path, "0002")
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(orders),
                [
                    an_order("risk-refused", "rejected", "risk.position_limit"),
                    an_order("venue-refused", "rejected", "broker.injected_reject"),
                    an_order("filled", "filled", None),
                ],
            )
            await conn.execute(
                insert(order_events),
                [
                    {
                        "order_id": o,
                        "account": "acct",
                        "from_status": "pending_new",
                        "to_status": s,
                        "reason": r,
                        "exec_id": None,
                        "at": NOW,
                    }
                    for o, s, r in (
                        ("risk-refused", "rejected", "risk.position_limit"),
                        ("venue-refused", "rejected", "broker.injected_reject"),
                    )
                ],
            )
        migrate(url, tmp_path)
        async with engine.connect() as conn:
            statuses = dict((await conn.execute(select(orders.c.id, orders.c.status))).all())
            events = dict(
                (
                    await conn.execute(select(order_events.c.order_id, order_events.c.to_status))
                ).all()
            )
    finally:
        await engine.dispose()
    assert statuses == {"risk-refused": "denied", "venue-refused": "rejected", "filled": "filled"}
    assert events == {"risk-refused": "denied", "venue-refused": "rejected"}
