"""The read-through cache's rules, on a clock the test moves (no sleeping)."""

from __future__ import annotations

import asyncio

import pytest

from app.services.cache import ReadThroughCache
from tests.helpers.clock import MovableClock as Clock


class Source:
    """What the cache reads through: counts reads; while ``holding``, each read waits for
    its own event in ``held`` (so a test decides the order reads finish in)."""

    def __init__(self) -> None:
        self.reads = 0
        self.value = "v1"
        self.holding = False
        self.held: list[asyncio.Event] = []
        self.fail = False

    async def read(self, key: str) -> str:
        self.reads += 1
        value = self.value  # what the source holds when the read reaches it
        if self.holding:
            release = asyncio.Event()
            self.held.append(release)
            await release.wait()
        if self.fail:
            raise ConnectionError("source down")
        return f"{key}={value}"


@pytest.fixture
def source() -> Source:
    return Source()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def cache_of(source: Source, clock: Clock, **kwargs: int) -> ReadThroughCache[str, str]:
    return ReadThroughCache(source.read, ttl_s=10.0, clock=clock, **kwargs)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_many_callers_of_a_missing_key_share_one_read(source: Source, clock: Clock) -> None:
    cache = cache_of(source, clock)
    source.holding = True
    callers = [asyncio.create_task(cache.get("k")) for _ in range(50)]
    await settle()
    source.held[0].set()
    assert set(await asyncio.gather(*callers)) == {"k=v1"}
    assert source.reads == 1


async def test_a_value_is_kept_for_its_ttl_then_read_again(source: Source, clock: Clock) -> None:
    cache = cache_of(source, clock)
    await cache.get("k")
    source.value = "v2"
    clock.now += 7.9  # before the last fifth: from the cache, nothing read
    assert await cache.get("k") == "k=v1"
    assert source.reads == 1
    clock.now += 2.1  # expired: the caller waits for a fresh read
    assert await cache.get("k") == "k=v2"
    assert source.reads == 2


async def test_a_key_in_use_is_read_again_in_its_last_fifth(source: Source, clock: Clock) -> None:
    cache = cache_of(source, clock)
    await cache.get("k")
    source.value = "v2"
    clock.now += 8.5  # in the last fifth: answered at once, read in the background
    assert await cache.get("k") == "k=v1"
    await settle()
    assert source.reads == 2
    clock.now += 5  # past the first entry's expiry; the background read's entry serves
    assert await cache.get("k") == "k=v2"
    assert source.reads == 2


async def test_a_read_begun_before_forget_is_kept_by_nobody(source: Source, clock: Clock) -> None:
    cache = cache_of(source, clock)
    source.holding = True
    before = asyncio.create_task(cache.get("k"))
    await settle()
    cache.forget("k")  # a change notice
    source.value = "v2"
    after = asyncio.create_task(cache.get("k"))
    await settle()
    assert source.reads == 2  # the caller after the change did not join the earlier read
    source.held[1].set()  # the read after the change finishes first...
    assert await after == "k=v2"
    source.held[0].set()  # ...then the stale one, which answers its own caller only
    assert await before == "k=v1"
    source.holding = False
    assert await cache.get("k") == "k=v2"
    assert source.reads == 2


async def test_a_failed_read_reaches_its_callers_and_is_not_kept(
    source: Source, clock: Clock
) -> None:
    cache = cache_of(source, clock)
    source.fail = True
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await cache.get("k")
    assert source.reads == 2
    source.fail = False
    assert await cache.get("k") == "k=v1"


async def test_a_full_cache_starts_over_rather_than_grow(source: Source, clock: Clock) -> None:
    cache = cache_of(source, clock, max_entries=3)
    for key in "abc":
        await cache.get(key)
    await cache.get("d")  # the fourth: the others are dropped
    await cache.get("d")
    assert source.reads == 4
    await cache.get("a")
    assert source.reads == 5
