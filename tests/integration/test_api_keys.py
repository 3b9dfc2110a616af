"""The in-process API key cache against a real database: one lookup per key at a time,
refreshed ahead of expiry while in use, and a revoked key refused within the TTL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from app.domain.errors import NotAuthenticated
from app.services.auth import ApiKeyService, Role
from app.storage.sql.database import create_engine
from app.storage.sql.repositories import ApiKeyRecord, ApiKeyRepository
from bench.risk import create_database
from tests.conftest import wait_for
from tests.helpers.clock import MovableClock


class CountingKeys(ApiKeyRepository):
    """The real repository, counting the lookups that reach the database."""

    lookups = 0

    async def find(self, key_hash: str) -> ApiKeyRecord | None:
        self.lookups += 1
        return await super().find(key_hash)


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
async def keys(tmp_path: Path) -> AsyncIterator[CountingKeys]:
    engine = create_engine(create_database(tmp_path / "keys.db"))
    yield CountingKeys(engine)
    await engine.dispose()


async def test_concurrent_requests_for_an_expired_key_share_one_lookup(
    keys: CountingKeys, clock: MovableClock
) -> None:
    service = ApiKeyService(keys, cache_ttl_s=0.2, clock=clock)
    _, key = await service.create("acct", Role.TRADER)
    await service.authenticate(key)
    clock.advance(0.25)  # expired
    before = keys.lookups
    principals = await asyncio.gather(*(service.authenticate(key) for _ in range(50)))
    assert {p.account for p in principals} == {"acct"}
    assert keys.lookups - before == 1


async def test_a_key_in_use_is_looked_up_again_before_its_entry_expires(
    keys: CountingKeys, clock: MovableClock
) -> None:
    service = ApiKeyService(keys, cache_ttl_s=2.0, clock=clock)
    _, key = await service.create("acct", Role.TRADER)
    await service.authenticate(key)
    clock.advance(1.65)  # in the last fifth of the TTL (0.35 s before it ends)
    before = keys.lookups
    assert (await service.authenticate(key)).account == "acct"  # from the cache
    assert keys.lookups == before

    async def refreshed() -> bool:
        return keys.lookups - before == 1  # looked up again in the background

    await wait_for(refreshed, within=5, interval=0.01)
    clock.advance(0.5)  # past the first entry's expiry: the refreshed one serves
    await service.authenticate(key)
    assert keys.lookups - before == 1


async def test_a_revoked_key_is_refused_once_its_entry_expires(
    keys: CountingKeys, clock: MovableClock
) -> None:
    service = ApiKeyService(keys, cache_ttl_s=0.2, clock=clock)
    key_id, key = await service.create("acct", Role.TRADER)
    await service.authenticate(key)
    assert await service.revoke(key_id)
    assert (await service.authenticate(key)).account == "acct"  # its entry, until it expires
    clock.advance(0.25)
    with pytest.raises(NotAuthenticated):
        await asyncio.gather(*(service.authenticate(key) for _ in range(5)))


async def test_an_unknown_key_is_refused_and_a_failed_lookup_is_not_cached(
    keys: CountingKeys, tmp_path: Path
) -> None:
    service = ApiKeyService(keys, cache_ttl_s=5.0)
    with pytest.raises(NotAuthenticated):
        await service.authenticate("og_not-a-key")
    empty = create_engine(f"sqlite+aiosqlite:///{tmp_path}/empty.db")  # no schema
    broken = CountingKeys(empty)
    service = ApiKeyService(broken, cache_ttl_s=5.0)
    try:
        for _ in range(2):
            with pytest.raises(OperationalError, match="no such table"):
                await service.authenticate("og_any")
        assert broken.lookups == 2  # the error was not cached: looked up again
    finally:
        await empty.dispose()
