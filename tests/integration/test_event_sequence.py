"""Every order event of an account is numbered 1, 2, 3, ... in commit order, with no gap,
whichever process writes it (two gateway workers, the applier), on SQLite (as it commits)
and PostgreSQL (just after): the sequence execution reports are streamed and resumed by."""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict

import httpx

from tests.conftest import Gateway, wait_for
from tests.helpers.database import account_events
from tests.helpers.orders import limit, market


async def _trade(client: httpx.AsyncClient, n: int) -> None:
    """Fills (market, written by the applier) and resting orders canceled (by a worker)."""
    if n % 2 == 0:
        placed = await client.post("/v1/orders", json=market("AAPL", qty=str(n % 5 + 1)))
    else:
        placed = await client.post("/v1/orders", json=limit("1.00", qty=str(n % 4 + 1)))
        if placed.status_code == 201:
            await client.delete(f"/v1/orders/{placed.json()['id']}")
    assert placed.status_code == 201, placed.text


async def test_each_accounts_events_are_numbered_without_gaps_in_commit_order(
    gateway: Gateway,
) -> None:
    accounts = ["seq-a", "seq-b"]
    clients = [gateway.client(gateway.new_key(a)) for a in accounts]
    try:
        await asyncio.gather(
            *(_trade(client, n) for client in clients for n in range(60)),
        )

        async def settled() -> bool:  # the applier has written every fill's events
            open_orders = [
                (await c.get("/v1/orders", params={"status": ["pending_new", "new"]})).json()
                for c in clients
            ]
            return all(page["items"] == [] for page in open_orders)

        await wait_for(settled, within=10)

        async def numbered() -> bool:  # on PostgreSQL, numbered just after their commit
            for account in accounts:
                if any(
                    seq is None for *_, seq in await account_events(gateway.database_url, account)
                ):
                    return False
            return True

        await wait_for(numbered, within=10)
    finally:
        for client in clients:
            await client.aclose()
    for account in accounts:
        events = await account_events(gateway.database_url, account)
        assert sorted(seq for *_, seq in events) == list(range(1, len(events) + 1))
        # Numbered in the order committed: within an order, as its events happened.
        by_order: dict[str, list[int]] = defaultdict(list)
        for _, order_id, seq in events:
            assert seq is not None
            by_order[order_id].append(seq)
        for order_seqs in by_order.values():
            assert all(a < b for a, b in itertools.pairwise(order_seqs)), order_seqs
        assert len(events) > 100
