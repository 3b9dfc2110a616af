"""Each API key's own request budget, against a real gateway (two workers) and real Redis:
its headers, its refusals, and one key's flood leaving another key alone."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from pydantic import ValidationError

from app.config import Settings
from tests.conftest import Launch
from tests.helpers.clients import trader_and_admin
from tests.helpers.orders import market
from tests.helpers.problems import assert_problem

BUDGETS = {
    "ORDERGATE_INBOUND_LIMITS__ORDER_ENTRY__RATE": "5",
    "ORDERGATE_INBOUND_LIMITS__ORDER_ENTRY__BURST": "10",
    "ORDERGATE_INBOUND_LIMITS__QUERIES__RATE": "2",
    "ORDERGATE_INBOUND_LIMITS__QUERIES__BURST": "4",
    "ORDERGATE_INBOUND_LIMITS__CANCELS__RATE": "1",
    "ORDERGATE_INBOUND_LIMITS__CANCELS__BURST": "2",
}
LEFT = re.compile(r'^"(\w+)";r=(\d+);t=(\d+)$')


def left(answer: httpx.Response) -> tuple[str, int]:
    """The RateLimit field's policy name and requests left."""
    match = LEFT.match(answer.headers["ratelimit"])
    assert match is not None, answer.headers["ratelimit"]
    return match.group(1), int(match.group(2))


def order(n: int) -> dict[str, str]:
    return market("MSFT", side="buy" if n % 2 else "sell", qty=str(n + 1))


async def test_a_keys_budget_is_announced_counted_and_then_refused_before_any_work(
    fresh: Launch,
) -> None:
    gateway = fresh(workers=2, **BUDGETS)
    async with trader_and_admin(gateway, "budget") as (client, admin):
        placed = [await client.post("/v1/orders", json=order(n)) for n in range(10)]
        assert all(a.status_code == 201 for a in placed), [a.text for a in placed]
        for answer in placed:
            assert answer.headers["ratelimit-policy"] == '"order_entry";q=10;w=2'
        remaining = [left(a)[1] for a in placed]
        assert remaining[0] == 9
        assert remaining == sorted(remaining, reverse=True)  # each took one (refill aside)

        flood = await asyncio.gather(
            *(client.post("/v1/orders", json=order(n)) for n in range(20, 40))
        )
        refused = [a for a in flood if a.status_code == 429]
        assert len(refused) >= 15
        for answer in refused:
            problem = assert_problem(answer, 429, "rate_limit.exceeded")
            assert "order_id" not in problem  # refused before any order existed
            assert int(answer.headers["retry-after"]) >= 1
            assert left(answer) == ("order_entry", 0)
        # Nothing of the refused requests reached the broker or the order log.
        accepted = 10 + sum(a.status_code == 201 for a in flood)
        assert (await admin.get("/v1/sim/broker")).json()["placements"] == accepted
        page = await admin.get("/v1/orders", params={"limit": 500})  # an admin: unlimited
        assert "ratelimit" not in page.headers

        # Queries and cancels have budgets of their own.
        query = await client.get("/v1/positions")
        assert query.status_code == 200
        assert query.headers["ratelimit-policy"] == '"queries";q=4;w=2'
        cancel = await client.delete(f"/v1/orders/{placed[0].json()['id']}")
        assert cancel.headers["ratelimit-policy"] == '"cancels";q=2;w=2'
        # A malformed order is charged once, not by the fast path and then by FastAPI.
        await asyncio.sleep(2.1)  # full again
        bad = await client.post("/v1/orders", content=b"{not json")
        assert_problem(bad, 422, "request.invalid")
        assert left(bad) == ("order_entry", 9)


async def test_one_keys_flood_leaves_another_keys_budget_alone(fresh: Launch) -> None:
    gateway = fresh(workers=2, **BUDGETS)
    async with (
        gateway.client(gateway.new_key("flooder")) as flooder,
        gateway.client(gateway.new_key("quiet")) as quiet,
    ):
        flood = asyncio.gather(*(flooder.post("/v1/orders", json=order(n)) for n in range(60)))
        calm = [await quiet.post("/v1/orders", json=order(100 + n)) for n in range(5)]
        answers = await flood
        assert sum(a.status_code == 429 for a in answers) >= 40
        assert [a.status_code for a in calm] == [201] * 5
        assert next(left(a)[1] for a in calm) == 9


def test_a_budget_that_admits_nothing_is_refused_at_start() -> None:
    for limits in (
        {"queries": {"rate": 0, "burst": 1}},
        {"order_entry": {"rate": 1, "burst": 0}},
        {"cancels": {"rate": 1}},
        {"everything": {"rate": 1, "burst": 1}},
    ):
        with pytest.raises(ValidationError):
            Settings(inbound_limits=limits)
