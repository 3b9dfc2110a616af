"""The risk limits cache against a real Redis and database: however many orders need an
account's limits at once, one read (and at most one rebuild) is in flight; and a limit
change is never answered from a read that began before it."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.config import Settings
from app.domain.risk import RiskLimits
from app.redisio.embedded import EmbeddedRedis
from app.runtime import open_commands, open_redis
from app.services.prices import ReferencePrices
from app.services.risk import RiskService
from app.storage.redis.last_trades import LastTrades
from app.storage.redis.risk_state import RiskStore
from app.storage.sql.database import create_engine
from app.storage.sql.repositories import OrderRepository
from app.storage.sql.risk_repository import RiskRepository
from bench.risk import create_database
from tests.conftest import wait_for
from tests.helpers.clock import MovableClock


class GatedLimits(RiskRepository):
    """The real repository; each read of limits is counted, and waits while ``gate`` is
    clear (so a test can hold a rebuild in flight)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.reads = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def limits(self, account: str) -> RiskLimits | None:
        self.reads += 1
        await self.gate.wait()
        return await super().limits(account)


class CountingStore(RiskStore):
    """The real Redis store, counting reads of the limits document."""

    reads = 0

    async def limits_document(self, account: str) -> tuple[bool, str | None]:
        self.reads += 1
        return await super().limits_document(account)


@dataclass
class Risk:
    service: RiskService
    repo: GatedLimits
    store: CountingStore
    account: str
    clock: MovableClock


@pytest.fixture
async def risk(redis_server: EmbeddedRedis, tmp_path: Path) -> AsyncIterator[Risk]:
    clock = MovableClock()
    settings = Settings()
    redis = open_commands(redis_server.url, settings)
    notices = open_redis(redis_server.url)
    engine = create_engine(create_database(tmp_path / "risk.db"))
    repo = GatedLimits(engine)
    store = CountingStore(redis)
    service = RiskService(
        notices=notices,
        store=store,
        risk_repo=repo,
        orders=OrderRepository(engine),
        prices=ReferencePrices(LastTrades(redis), dict(settings.universe)),
        default_limits=settings.risk.default_limits,
        limits_ttl_s=2.0,
        clock=clock,
    )
    # An account Redis has never seen: its first read rebuilds it from the database.
    yield Risk(service, repo, store, f"cache-{secrets.token_hex(4)}", clock)
    await service.close()
    await redis.close()
    await notices.aclose()
    await engine.dispose()


async def test_many_orders_needing_an_unknown_accounts_limits_rebuild_it_once(
    risk: Risk,
) -> None:
    results = await asyncio.gather(*(risk.service.limits(risk.account) for _ in range(50)))
    assert len({r.model_dump_json() for r in results}) == 1
    assert risk.repo.reads == 1


async def test_a_limit_change_is_not_answered_by_a_read_begun_before_it(risk: Risk) -> None:
    risk.repo.gate.clear()
    before = asyncio.create_task(risk.service.limits(risk.account))
    await asyncio.sleep(0.05)  # that read is now in flight, held in the database
    assert risk.repo.reads == 1
    risk.service.forget_limits(risk.account)  # as a change notice does
    after = asyncio.create_task(risk.service.limits(risk.account))
    await asyncio.sleep(0.05)
    risk.repo.gate.set()
    await asyncio.gather(before, after)
    assert risk.repo.reads == 2  # the order after the change read afresh


async def test_an_account_in_use_is_refreshed_before_its_entry_expires(risk: Risk) -> None:
    await risk.service.limits(risk.account)
    risk.clock.advance(1.65)  # in the last fifth of the 2 s TTL (0.35 s before it ends)
    reads = risk.store.reads
    await risk.service.limits(risk.account)  # answered from the cache at once...
    assert risk.store.reads == reads

    async def refreshed() -> bool:
        return risk.store.reads == reads + 1  # ...while Redis is read in the background

    await wait_for(refreshed, within=5, interval=0.01)
    risk.clock.advance(0.5)  # past the first entry's expiry: the refreshed entry serves
    await risk.service.limits(risk.account)
    assert risk.store.reads == reads + 1
