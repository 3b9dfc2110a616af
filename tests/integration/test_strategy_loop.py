"""The whole pipeline on a real gateway: the simulated feed's ticks -> the processor -> the
signal worker -> the strategy's order intents -> risk -> the paper exchange -> fills on the
WebSocket stream."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import websockets

from tests.conftest import Launch, wait_for
from tests.helpers.stream import stream_url

FAST_FEED = {
    "ORDERGATE_MARKETDATA__FEED": "simulated",
    # A round a minute of the feed's clock, 20 rounds a second: a bar every 50 ms, so the
    # signals' 60-bar history is there within ~3 s.
    "ORDERGATE_MARKETDATA__SIMULATED__ROUNDS_PER_S": "20",
    "ORDERGATE_MARKETDATA__SIMULATED__TIME_SCALE": "1200",
    "ORDERGATE_MARKETDATA__SIMULATED__VOLATILITY": "0.5",
    "ORDERGATE_STRATEGY__ENABLED": "true",
    "ORDERGATE_STRATEGY__REBALANCE_INTERVAL_S": "0.5",
}


async def test_ticks_become_signals_become_orders_whose_fills_reach_the_stream(
    fresh: Launch,
) -> None:
    gateway = fresh("sqlite", workers=2, **FAST_FEED)
    key_file = Path(gateway.env["ORDERGATE_DATA_DIR"]) / "strategy-api-key"

    async def key_issued() -> bool:
        return key_file.exists()

    await wait_for(key_issued, within=20)
    key = key_file.read_text().strip()

    async with gateway.client(key) as strategy:

        async def holds_both_sides() -> bool:
            positions = (await strategy.get("/v1/positions")).json()
            signs = {Decimal(p["qty"]) > 0 for p in positions if Decimal(p["qty"]) != 0}
            return signs == {True, False}

        await wait_for(holds_both_sides, within=30, interval=0.2)
        orders = (await strategy.get("/v1/orders", params={"limit": 200})).json()["items"]
        signals = (await strategy.get("/v1/signals/latest")).json()["signals"]

    assert orders
    assert all(o["client_order_id"].startswith("s") for o in orders)
    assert {o["account"] for o in orders} == {"strategy"}
    held_long = {s for s, v in signals.items() if v["composite"] is not None}
    assert len(held_long) == 12  # every symbol has its history, so a composite

    # The fills are on the strategy's execution stream, from its first report.
    headers = {"Authorization": f"Bearer {key}"}
    fills: list[dict[str, Any]] = []
    async with websockets.connect(stream_url(gateway), additional_headers=headers) as ws:
        await ws.send(json.dumps({"op": "subscribe", "channels": ["executions"], "since": 0}))
        async with asyncio.timeout(10):
            while not fills:
                frame = json.loads(await ws.recv())
                fills += [m for m in frame if m.get("event") == "fill"]
    assert fills[0]["order"]["client_order_id"].startswith("s")

    # Risk state in Redis agrees with the order log the strategy's orders went to.
    gateway.agrees_with_the_order_log(within=10)
