"""The FastAPI application: routers, error handling, metrics, and the lifespan that owns
every client (Redis, database engines, broker, background tasks)."""

from __future__ import annotations

import gc
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi_offline import FastAPIOffline
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator.metrics import Info
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from app.config import Settings, get_settings
from app.deps import RATE_LIMIT_TAKEN, Services, document_bearer_auth
from app.http.bodies import BodySizeLimit
from app.http.order_entry import OrderEntryFastPath
from app.http.problems import ERROR_TABLE, error_response
from app.http.request_id import RequestId
from app.routers import (
    account,
    broker_guard,
    health,
    marketdata,
    metrics,
    orders,
    risk,
    sim,
    stream,
    symbols,
)
from app.runtime import (
    marketdata_store,
    open_core,
    placing_broker,
    start_applier,
    start_strategy,
    start_stream_hub,
)
from app.services.auth import ApiKeyService
from app.services.broker_guard import BrokerGuard
from app.services.health import DependencyChecks
from app.services.marketdata import MarketDataIngest, MarketDataQueries
from app.services.metrics import record_request
from app.services.observability import GatewayMetrics
from app.services.order_timing import record_order_entry
from app.services.orders import OrderService
from app.services.prices import ReferencePrices
from app.services.rate_limits import InboundLimits
from app.services.risk import RiskService
from app.services.risk_controls import RiskControlService
from app.services.signals import SignalQueries
from app.services.stream_session import ExecutionFeed
from app.services.symbols import SymbolCatalog
from app.storage.redis.broker_guard import BrokerGuardStore
from app.storage.redis.idempotency import IdempotencyStore
from app.storage.redis.last_trades import LastTrades
from app.storage.redis.rate_limits import RateLimitStore
from app.storage.redis.signals import SignalStore
from app.storage.sql.execution_log import ExecutionLog
from app.storage.sql.repositories import ApiKeyRepository
from app.storage.sql.risk_repository import RiskRepository

log = logging.getLogger("ordergate")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    async with AsyncExitStack() as stack:
        core = await open_core(settings, stack, checkpoints=settings.applier == "in_process")
        # Under `ordergate serve` the applier is a process of its own (it would otherwise
        # take a quarter of this event loop); an app created directly runs it in process.
        if settings.applier == "in_process":
            await start_applier(core, settings, stack)
        idempotency = IdempotencyStore(
            core.redis, settings.idempotency_ttl_s, settings.idempotency_inflight_ttl_s
        )
        stack.push_async_callback(idempotency.close)
        risk_repo = RiskRepository(core.engine)
        prices = ReferencePrices(LastTrades(core.redis), dict(settings.universe))
        symbols = SymbolCatalog(settings.instruments(), prices)
        risk = RiskService(
            notices=core.redis_blocking,
            store=core.risk_store,
            risk_repo=risk_repo,
            orders=core.orders,
            prices=prices,
            default_limits=settings.risk.default_limits,
            limits_ttl_s=settings.risk.limits_cache_ttl_s,
        )
        risk.start()
        stack.push_async_callback(risk.close)
        guard = BrokerGuard(BrokerGuardStore(core.redis, settings.broker), settings.broker_guard)
        await guard.start()
        orders = OrderService(
            order_log=core.order_log,
            orders=core.orders,
            idempotency=idempotency,
            broker=placing_broker(core.broker, settings, stack),
            guard=guard,
            risk=risk,
            symbols=symbols,
            broker_timeout_s=settings.broker_timeout_ms / 1000,
            mass_cancel_batch=settings.mass_cancel_batch,
        )
        risk_controls = RiskControlService(
            risk=risk,
            store=core.risk_store,
            repo=risk_repo,
            orders=orders,
            default_limits=settings.risk.default_limits,
            placement_settle_s=settings.placement_settle_s,
        )
        stack.push_async_callback(risk_controls.close)  # before the orders' clients close
        keys = ApiKeyService(ApiKeyRepository(core.engine), settings.auth_cache_ttl_s)
        executions = ExecutionFeed(
            hub=await start_stream_hub(core, settings, stack),
            store=core.stream_store,
            executions=ExecutionLog(core.engine),
            keys=keys,
            queue_size=settings.stream.queue_size,
            heartbeat_s=settings.stream.heartbeat_s,
            key_check_s=settings.stream.key_check_s,
        )
        executions.start()
        stack.push_async_callback(executions.close)
        if settings.strategy.enabled:
            await start_strategy(
                core, settings, stack, orders=orders, keys=keys, prices=prices, symbols=symbols
            )
        md_store = marketdata_store(core.redis, settings)
        traded = frozenset(settings.universe)
        health = DependencyChecks(core.redis, core.engine, core.broker)
        gateway_metrics = GatewayMetrics(
            settings.metrics,
            settings.prometheus_multiproc_dir,
            checks=health,
            guard=guard,
            marketdata=md_store,
        )
        await gateway_metrics.start()
        stack.push_async_callback(gateway_metrics.close)
        app.state.services = Services(
            settings=settings,
            redis=core.redis,
            engine=core.engine,
            broker=core.broker,
            guard=guard,
            limits=InboundLimits(RateLimitStore(core.redis), settings.inbound_limits),
            orders=orders,
            symbols=symbols,
            risk=risk,
            risk_controls=risk_controls,
            keys=keys,
            executions=executions,
            marketdata=MarketDataIngest(md_store, guard, settings.marketdata.max_ahead_s),
            marketdata_queries=MarketDataQueries(md_store, traded),
            signals=SignalQueries(SignalStore(core.redis), traded),
            health=health,
            metrics=gateway_metrics,
        )
        # Everything allocated so far lives as long as the process: take it out of the
        # collector's view, so full collections (latency spikes) only walk request garbage.
        gc.collect()
        gc.freeze()
        yield


def _install_error_handlers(app: FastAPI) -> None:
    """Every class of the one error table answers through it (app.http.problems)."""

    async def answer(request: Request, exc: Exception) -> Response:
        if isinstance(exc, StarletteHTTPException) and exc.status_code == 405:
            # Starlette names the methods of the first route on the path; all of them.
            allowed = _allowed_methods(app, request.url.path)
            if allowed:
                exc.headers = {**(exc.headers or {}), "Allow": ", ".join(allowed)}
        response = error_response(exc)
        for name, value in request.scope.get("state", {}).get(RATE_LIMIT_TAKEN, {}).items():
            response.headers.setdefault(name, value)
        return response

    for cls in ERROR_TABLE:
        app.add_exception_handler(cls, answer)


def _allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method the OpenAPI document gives an operation on ``path``."""
    methods: set[str] = set()
    for template, operations in app.openapi().get("paths", {}).items():
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            methods |= {method.upper() for method in operations}
    return sorted(methods)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    # /docs and /redoc with their scripts served from the installed fastapi-offline package:
    # FastAPI's own pages load them from a CDN, and are blank on a machine without internet.
    app = FastAPIOffline(
        title="ordergate",
        version="0.1.0",
        summary="Order gateway: pre-trade risk checks, a durable order log, a paper exchange.",
        lifespan=lifespan,
        # Metrics are Prometheus's (below). FastAPI's native OpenTelemetry, with no provider
        # configured, still looked up its providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    for router in (
        health.router,
        orders.router,
        account.router,
        symbols.router,
        risk.router,
        broker_guard.router,
        sim.router,
        stream.router,
        marketdata.router,
        metrics.router,
    ):
        app.include_router(router)
    _install_error_handlers(app)
    document_bearer_auth(app)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        larger={"/v1/marketdata/ticks": settings.marketdata.max_body_bytes},
    )
    app.add_middleware(RequestId)  # outermost: the id is in the context of every line
    # The instrumentator's middleware times every request; /metrics itself is served by
    # the metrics router (the whole gateway's, read at each scrape).
    instrumentator = Instrumentator(excluded_handlers=["/metrics"])
    instrumentator.add(_request_recorder(settings.metrics.sla_target_ms / 1000))
    instrumentator.instrument(app)
    return app


def create_served_app(settings: Settings | None = None) -> ASGIApp:
    """What ``ordergate serve`` runs: the order entry fast path in front of ``create_app()``."""
    settings = settings or get_settings()
    return OrderEntryFastPath(
        create_app(settings),
        max_body_bytes=settings.max_body_bytes,
        sla_target_s=settings.metrics.sla_target_ms / 1000,
    )


def _request_recorder(sla_target_s: float) -> Callable[[Info], None]:
    def record(info: Info) -> None:
        # Requests and latency per route, as the instrumentator's defaults name them (see
        # app.services.metrics); the order entry fast path records its orders the same way,
        # and both record each order entry against the SLA.
        handler, method = info.modified_handler, info.method
        record_request(handler, method, info.modified_status, info.modified_duration)
        if handler == orders.ORDERS_PATH and method == "POST":
            record_order_entry(info.modified_duration, sla_target_s)

    return record
