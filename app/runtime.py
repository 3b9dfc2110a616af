"""The clients a gateway or applier process opens: Redis, database engines, the order log
and the broker. Opened into an ``AsyncExitStack`` so they close in reverse order."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from app.brokers.base import Broker
from app.brokers.batching import PlacementBatcher
from app.brokers.simulated import SimulatedBroker
from app.config import Settings
from app.redisio.embedded import EmbeddedRedis
from app.redisio.multiplexed import MultiplexedRedis
from app.services.auth import ApiKeyService
from app.services.broker_guard import BrokerGuard
from app.services.execution_stream import CommitSignal, ExecutionPublisher, StreamRepair
from app.services.executions import ExecutionApplier
from app.services.orders import OrderService
from app.services.prices import ReferencePrices
from app.services.strategy import BLOCK_MS as STRATEGY_BLOCK_MS
from app.services.strategy import StrategyLoop
from app.services.stream_hub import StreamHub
from app.services.symbols import SymbolCatalog
from app.storage.redis.broker_guard import BrokerGuardStore
from app.storage.redis.execution_stream import ExecutionStreamStore
from app.storage.redis.lease import Lease
from app.storage.redis.marketdata import MarketDataStore
from app.storage.redis.risk_state import RiskStore
from app.storage.sql.committed_reports import CommittedReports
from app.storage.sql.database import create_engine, create_writer_engine
from app.storage.sql.execution_log import ExecutionLog
from app.storage.sql.order_log import OrderLog
from app.storage.sql.repositories import OrderRepository

log = logging.getLogger(__name__)

# A report read blocks up to the applier's 50 ms; past this, Redis is taken for gone.
REPORT_READ_TIMEOUT_S = 2.0
# The stream hub's read blocks this long at most (it is woken when it must read more).
STREAM_READ_BLOCK_MS = 5000


@dataclass(slots=True)
class Core:
    redis: MultiplexedRedis  # every command but pub/sub (and the broker's report reads)
    redis_blocking: Redis  # pub/sub, which needs connections of its own
    engine: AsyncEngine
    order_log: OrderLog
    orders: OrderRepository
    broker: SimulatedBroker
    risk_store: RiskStore
    redis_url: str
    stream_store: ExecutionStreamStore  # where committed execution reports are published


def open_commands(
    url: str, settings: Settings, reply_timeout_s: float | None = None
) -> MultiplexedRedis:
    """The multiplexed client every command goes through. A Redis that answers nothing
    within the risk budget (or ``reply_timeout_s``, for a client of blocking reads) is
    treated as down: the order path fails closed instead of waiting (see redis_mux)."""
    budget_s = settings.risk.redis_timeout_ms / 1000
    return MultiplexedRedis(
        url, reply_timeout_s=reply_timeout_s or budget_s, connect_timeout_s=budget_s
    )


def open_redis(url: str) -> Redis:
    """redis-py, for what needs a connection of its own: pub/sub
    (everything else goes over ``MultiplexedRedis``).

    A blocking pool: a caller beyond ``max_connections`` waits for a connection instead of
    failing. One immediate retry (a pooled connection that died with a restarted server)."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=32,
        timeout=2.0,
        socket_timeout=2.0,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 1),
    )
    return Redis.from_pool(pool)


async def open_core(settings: Settings, stack: AsyncExitStack, *, checkpoints: bool) -> Core:
    """``checkpoints``: this process moves SQLite's WAL into the database (one process
    should: the applier when there is one, so the gateways' event loops never do)."""
    redis_url = settings.redis_url
    if redis_url is None:
        # No REDIS_URL: a private, real redis-server for this process.
        embedded = EmbeddedRedis().start()
        stack.callback(embedded.stop)
        redis_url = embedded.url
        log.info("started a private %s at %s", embedded.server_name, redis_url)
    redis = open_commands(redis_url, settings)
    stack.push_async_callback(redis.close)
    redis_blocking = open_redis(redis_url)
    stack.push_async_callback(redis_blocking.aclose)
    # The broker's report stream is read with a blocking XREAD: a connection of its own
    # (opened on first use, so only the applier opens it).
    reports = open_commands(redis_url, settings, reply_timeout_s=REPORT_READ_TIMEOUT_S)
    stack.push_async_callback(reports.close)

    url = settings.effective_database_url
    engine = create_engine(url)
    stack.push_async_callback(engine.dispose)
    writer_engine = create_writer_engine(url)
    stack.push_async_callback(_dispose, writer_engine)

    order_log = OrderLog(
        writer_engine,
        checkpoints=checkpoints,
        order_write_timeout_s=settings.storage_timeout_ms / 1000,
    )
    order_log.start()
    stack.push_async_callback(order_log.close)
    stream_store = ExecutionStreamStore(redis, settings.stream.max_length)
    signal = CommitSignal(redis)
    signal.start()
    stack.push_async_callback(signal.close)  # after the order log's: its last commits
    order_log.on_commit = signal.notify

    broker = SimulatedBroker(redis, reports, settings.sim, dict(settings.universe))
    await broker.start()
    stack.push_async_callback(broker.close)
    risk_store = RiskStore(redis)
    stack.push_async_callback(risk_store.close)
    return Core(
        redis,
        redis_blocking,
        engine,
        order_log,
        OrderRepository(engine),
        broker,
        risk_store,
        redis_url,
        stream_store,
    )


def placing_broker(broker: SimulatedBroker, settings: Settings, stack: AsyncExitStack) -> Broker:
    """The broker as the order path places through it: in throughput mode, a batcher."""
    batching = settings.placement_batching
    if batching.mode == "latency":
        return broker
    batcher = PlacementBatcher(
        broker,
        max_orders=batching.max_orders,
        max_wait_s=batching.max_wait_ms / 1000,
        timeout_s=settings.broker_timeout_ms / 1000,
    )
    stack.push_async_callback(batcher.close)  # before the broker's own close
    return batcher


def make_applier(core: Core, settings: Settings) -> ExecutionApplier:
    return ExecutionApplier(
        broker=core.broker,
        guard=BrokerGuard(BrokerGuardStore(core.redis, settings.broker), settings.broker_guard),
        order_log=core.order_log,
        orders=core.orders,
        lease=Lease(core.redis, "execution-applier"),
        risk=core.risk_store,
        reconcile_after_s=settings.reconcile_after_s,
        live_order_check_interval_s=settings.live_order_check_interval_s,
        orphan_reservation_after_s=settings.risk.orphan_reservation_after_s,
    )


async def start_applier(core: Core, settings: Settings, stack: AsyncExitStack) -> ExecutionApplier:
    """The applier, and beside it the execution publisher (both singletons)."""
    applier = make_applier(core, settings)
    applier.start()
    stack.push_async_callback(applier.close)
    interval_s = settings.stream.repair_interval_s
    reader = open_commands(core.redis_url, settings, reply_timeout_s=interval_s + 2.0)
    stack.push_async_callback(reader.close)
    repair = StreamRepair(
        core.stream_store,
        ExecutionLog(core.engine),
        max_length=settings.stream.max_length,
        max_age_s=settings.stream.max_age_s,
    )
    committed_engine = create_writer_engine(settings.effective_database_url)
    stack.push_async_callback(_dispose, committed_engine)
    publisher = ExecutionPublisher(
        core.stream_store,
        CommittedReports(committed_engine),
        reader,
        Lease(core.redis, "execution-publisher"),
        repair,
        interval_s=interval_s,
    )
    publisher.start()
    stack.push_async_callback(publisher.close)
    return applier


async def start_strategy(
    core: Core,
    settings: Settings,
    stack: AsyncExitStack,
    *,
    orders: OrderService,
    keys: ApiKeyService,
    prices: ReferencePrices,
    symbols: SymbolCatalog,
) -> StrategyLoop:
    """The strategy loop (one at a time over every gateway process, by its lease)."""
    reader = open_commands(core.redis_url, settings, reply_timeout_s=STRATEGY_BLOCK_MS / 1000 + 2)
    stack.push_async_callback(reader.close)
    strategy = StrategyLoop(
        orders=orders,
        keys=keys,
        prices=prices,
        symbols=symbols,
        reader=reader,
        lease=Lease(core.redis, "strategy"),
        settings=settings.strategy,
        data_dir=settings.data_dir,
    )
    strategy.start()
    stack.push_async_callback(strategy.close)
    return strategy


async def start_stream_hub(core: Core, settings: Settings, stack: AsyncExitStack) -> StreamHub:
    """This process's reader of the execution streams, on a connection of its own (its
    read blocks)."""
    reader = open_commands(
        core.redis_url, settings, reply_timeout_s=STREAM_READ_BLOCK_MS / 1000 + 2.0
    )
    stack.push_async_callback(reader.close)
    hub = StreamHub(
        core.stream_store, ExecutionLog(core.engine), core.redis, reader, STREAM_READ_BLOCK_MS
    )
    hub.start()
    stack.push_async_callback(hub.close)
    return hub


def marketdata_store(redis: MultiplexedRedis, settings: Settings) -> MarketDataStore:
    md = settings.marketdata
    return MarketDataStore(
        redis,
        raw_max_length=md.raw_max_length,
        events_max_length=md.events_max_length,
        dead_max_length=md.dead_max_length,
        bars_kept=md.bars_kept,
    )


async def _dispose(engine: AsyncEngine | Engine) -> None:
    if isinstance(engine, AsyncEngine):
        await engine.dispose()
    else:
        engine.dispose()
