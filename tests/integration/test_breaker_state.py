"""The circuit breaker's and the pacing buckets' scripts against a real Redis, step by
step: what counts, what is stale, what happens to trials that never report."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator

import pytest

from app.config import BrokerGuardSettings
from app.domain.broker_guard import (
    BreakerPolicy,
    BreakerState,
    CallOutcome,
    Endpoint,
    PacingRule,
)
from app.domain.errors import BrokerCircuitOpen, PacingRateLimited
from app.redisio.embedded import EmbeddedRedis
from app.redisio.multiplexed import MultiplexedRedis
from app.services.broker_guard import BrokerGuard
from app.storage.redis.broker_guard import Admitted, BrokerGuardStore, Refused
from app.storage.redis.keys import BrokerGuardKeys
from bench.procs import free_port

POLICY = BreakerPolicy(failure_threshold=5, open_s=0.3, half_open_trials=3)
PLENTY = PacingRule(rate=1_000_000, burst=1_000_000)
OK, FAIL, UNUSED = CallOutcome.SUCCESS, CallOutcome.FAILURE, CallOutcome.UNUSED


@pytest.fixture
async def store(redis_server: EmbeddedRedis) -> AsyncIterator[BrokerGuardStore]:
    redis = MultiplexedRedis(redis_server.url.rsplit("/", 1)[0] + "/3")
    # A broker of its own per test: its keys are new.
    yield BrokerGuardStore(redis, f"b-{secrets.token_hex(4)}")
    await redis.close()


async def admit(store: BrokerGuardStore) -> Admitted:
    result = await store.admit(Endpoint.ORDER_PLACEMENT, PLENTY, 10, POLICY)
    assert isinstance(result, Admitted), result
    return result


async def open_then_half_open(store: BrokerGuardStore) -> None:
    """Five failures open the breaker; then its open time passes."""
    for _ in range(5):
        await store.record(await admit(store), FAIL, POLICY)
    await asyncio.sleep(POLICY.open_s + 0.05)


async def state(store: BrokerGuardStore) -> BreakerState:
    breaker, _ = await store.read(POLICY, {})
    return breaker.state


async def test_a_late_outcome_from_before_the_breaker_opened_does_not_count(
    store: BrokerGuardStore,
) -> None:
    calls = [await admit(store) for _ in range(6)]
    for call in calls[:4]:
        assert await store.record(call, FAIL, POLICY) is None
    assert await store.record(calls[4], FAIL, POLICY) is BreakerState.OPEN
    # The sixth call was in flight when the breaker opened: its failure is stale.
    assert await store.record(calls[5], FAIL, POLICY) is None
    refused = await store.admit(Endpoint.ORDER_PLACEMENT, PLENTY, 10, POLICY)
    assert isinstance(refused, Refused)
    assert refused.breaker_open
    assert 0 < refused.retry_after_ms <= 300
    breaker, _ = await store.read(POLICY, {})
    assert breaker.times_opened == 1


async def test_a_call_paced_only_gets_its_token_past_an_open_or_half_open_breaker(
    store: BrokerGuardStore,
) -> None:
    """A kill switch's cancels: the breaker is not asked, takes no trial slot."""
    for _ in range(5):
        await store.record(await admit(store), FAIL, POLICY)
    paced = await store.admit(Endpoint.ORDER_PLACEMENT, PLENTY, 10, POLICY, ask_breaker=False)
    assert isinstance(paced, Admitted)
    assert not paced.trial
    await asyncio.sleep(POLICY.open_s + 0.05)
    for _ in range(5):  # half-open: none of these takes one of its three trials
        paced = await store.admit(Endpoint.ORDER_PLACEMENT, PLENTY, 10, POLICY, ask_breaker=False)
        assert isinstance(paced, Admitted)
        assert not paced.trial
    breaker, _ = await store.read(POLICY, {})
    assert (breaker.state, breaker.trials_admitted) == (BreakerState.HALF_OPEN, 0)
    trials = [await admit(store) for _ in range(3)]
    assert all(t.trial for t in trials)


async def test_a_lost_bucket_refills_even_when_every_caller_refuses_to_wait(
    store: BrokerGuardStore,
) -> None:
    """Reconciliation takes a token only if one is free now: after Redis lost the bucket
    (it starts empty), such refusals alone must let it fill again."""
    rule = PacingRule(rate=20, burst=1)
    first = await store.admit(Endpoint.EXECUTIONS, rule, 0, POLICY, ask_breaker=False)
    assert isinstance(first, Refused)
    assert not first.breaker_open
    await asyncio.sleep(0.1)  # two tokens' time, one the burst holds
    again = await store.admit(Endpoint.EXECUTIONS, rule, 0, POLICY, ask_breaker=False)
    assert isinstance(again, Admitted)
    assert again.wait_s == 0


async def test_a_success_between_failures_starts_the_count_again(
    store: BrokerGuardStore,
) -> None:
    for _ in range(3):
        for _ in range(4):
            assert await store.record(await admit(store), FAIL, POLICY) is None
        assert await store.record(await admit(store), OK, POLICY) is None
    assert await state(store) is BreakerState.CLOSED


async def test_half_open_closes_only_when_every_trial_succeeds_and_a_failure_reopens(
    store: BrokerGuardStore,
) -> None:
    await open_then_half_open(store)
    trials = [await admit(store) for _ in range(3)]
    assert all(t.trial for t in trials)
    fourth = await store.admit(Endpoint.ORDER_PLACEMENT, PLENTY, 10, POLICY)
    assert isinstance(fourth, Refused)
    assert fourth.breaker_open
    assert await store.record(trials[0], OK, POLICY) is None
    assert await store.record(trials[1], OK, POLICY) is None
    assert await state(store) is BreakerState.HALF_OPEN
    assert await store.record(trials[2], OK, POLICY) is BreakerState.CLOSED

    await open_then_half_open(store)
    trial = await admit(store)
    assert await store.record(trial, FAIL, POLICY) is BreakerState.OPEN
    assert await state(store) is BreakerState.OPEN


async def test_a_trial_never_made_gives_its_slot_back(store: BrokerGuardStore) -> None:
    await open_then_half_open(store)
    trials = [await admit(store) for _ in range(3)]
    assert await store.record(trials[0], UNUSED, POLICY) is None  # e.g. its write failed
    again = await admit(store)
    assert again.trial
    for trial in (*trials[1:], again):
        await store.record(trial, OK, POLICY)
    assert await state(store) is BreakerState.CLOSED


async def test_trials_that_never_report_give_way_to_a_new_round(
    store: BrokerGuardStore,
) -> None:
    await open_then_half_open(store)
    lost = [await admit(store) for _ in range(3)]  # their workers died: no outcome comes
    assert isinstance(await store.admit(Endpoint.ORDER_PLACEMENT, PLENTY, 10, POLICY), Refused)
    await asyncio.sleep(0.35)
    fresh = [await admit(store) for _ in range(3)]
    assert all(t.trial for t in fresh)
    # The lost round's outcomes, should they come after all, no longer count.
    assert await store.record(lost[0], FAIL, POLICY) is None
    for trial in fresh:
        await store.record(trial, OK, POLICY)
    assert await state(store) is BreakerState.CLOSED


async def test_a_bucket_books_tokens_in_turn_and_refuses_past_the_wait(
    store: BrokerGuardStore,
) -> None:
    rule = PacingRule(rate=10, burst=2)
    await store.start([Endpoint.EXECUTIONS])
    await asyncio.sleep(0.25)  # full
    now = [await store.admit(Endpoint.EXECUTIONS, rule, 250, POLICY) for _ in range(2)]
    assert all(isinstance(a, Admitted) and a.wait_s == 0 for a in now)
    booked = [await store.admit(Endpoint.EXECUTIONS, rule, 250, POLICY) for _ in range(2)]
    waits = [a.wait_s for a in booked if isinstance(a, Admitted)]
    assert len(waits) == 2
    assert 0.05 < waits[0] < waits[1] <= 0.2 + 0.01
    refused = await store.admit(Endpoint.EXECUTIONS, rule, 250, POLICY)
    assert isinstance(refused, Refused)
    assert not refused.breaker_open
    assert 250 < refused.retry_after_ms <= 310
    _, [bucket] = await store.read(POLICY, {Endpoint.EXECUTIONS: rule})
    assert (bucket.taken, bucket.waited, bucket.throttled) == (2, 2, 1)
    assert bucket.queued == 2


async def test_a_guard_that_cannot_reach_redis_reads_as_open() -> None:
    redis = MultiplexedRedis(f"redis://127.0.0.1:{free_port()}/0", connect_timeout_s=0.2)
    guard = BrokerGuard(BrokerGuardStore(redis, "unreachable"), BrokerGuardSettings())
    with pytest.raises(BrokerCircuitOpen) as refused:
        await guard.admit(Endpoint.ORDER_PLACEMENT)
    assert refused.value.headers == {"Retry-After": "1"}
    await redis.close()


async def test_the_guard_refuses_with_the_code_of_why(store: BrokerGuardStore) -> None:
    settings = BrokerGuardSettings.model_validate(
        {"pacing": {"order_placement": {"rate": 10, "burst": 1}}, "max_wait_ms": 0}
    )
    guard = BrokerGuard(store, settings)
    await guard.start()
    await asyncio.sleep(0.15)  # full
    await guard.admit(Endpoint.ORDER_PLACEMENT)
    with pytest.raises(PacingRateLimited) as paced:
        await guard.admit(Endpoint.ORDER_PLACEMENT)
    assert paced.value.status == 429
    assert paced.value.headers == {"Retry-After": "1"}


async def test_a_success_admitted_before_failures_still_starts_the_count_again(
    store: BrokerGuardStore,
) -> None:
    guard = BrokerGuard(store, BrokerGuardSettings())
    slow = await guard.admit(Endpoint.ORDER_PLACEMENT)  # admitted with no failures counted
    for _ in range(4):
        await guard.failed(await guard.admit(Endpoint.ORDER_PLACEMENT))
    await guard.succeeded(slow)  # it answered after the four failures
    await guard.failed(await guard.admit(Endpoint.ORDER_PLACEMENT))
    breaker, _ = await guard.read()
    assert (breaker.state, breaker.consecutive_failures) == (BreakerState.CLOSED, 1)


async def test_a_caller_that_wakes_late_for_its_token_books_again(
    store: BrokerGuardStore,
) -> None:
    settings = BrokerGuardSettings.model_validate(
        {"pacing": {"executions": {"rate": 10, "burst": 1}}, "max_wait_ms": 1000}
    )
    guard = BrokerGuard(store, settings)
    await guard.start()
    await asyncio.sleep(0.15)  # full
    await guard.admit(Endpoint.EXECUTIONS)  # the only token
    booked = asyncio.create_task(guard.admit(Endpoint.EXECUTIONS))  # books one for +0.1 s
    await asyncio.sleep(0.01)
    time.sleep(0.3)  # noqa: ASYNC251 - the whole process stalls past the booked moment
    await booked
    _, buckets = await guard.read()
    [bucket] = [b for b in buckets if b.endpoint is Endpoint.EXECUTIONS]
    # Booked once, then, woken late, took another token: the stalled moment's is spent.
    assert (bucket.taken, bucket.waited) == (2, 1)


async def test_a_pacing_bucket_redis_lost_starts_empty_not_full(
    store: BrokerGuardStore, redis_server: EmbeddedRedis
) -> None:
    rule = PacingRule(rate=10, burst=5)
    await store.start([Endpoint.EXECUTIONS])
    await asyncio.sleep(0.55)  # full
    first = [await store.admit(Endpoint.EXECUTIONS, rule, 1000, POLICY) for _ in range(5)]
    assert all(isinstance(a, Admitted) and a.wait_s == 0 for a in first)
    # Redis loses its state (FLUSHALL, a restart without persistence): no fresh burst.
    plain = MultiplexedRedis(redis_server.url.rsplit("/", 1)[0] + "/3")
    await plain.execute("DEL", BrokerGuardKeys(store.broker).bucket(Endpoint.EXECUTIONS))
    await plain.close()
    after = await store.admit(Endpoint.EXECUTIONS, rule, 1000, POLICY)
    assert isinstance(after, Admitted)
    assert after.wait_s >= 0.09
