"""Settings: read once, from the environment and an optional YAML file (``ORDERGATE_CONFIG``).

Precedence: constructor arguments > environment > YAML file > defaults. ``REDIS_URL`` and
``DATABASE_URL`` are read without the ``ORDERGATE_`` prefix because every tool expects them so.
"""

from __future__ import annotations

import os
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from app.domain.broker_guard import (
    INTERACTIVE_BROKERS_PACING,
    BreakerPolicy,
    Endpoint,
    PacingRule,
)
from app.domain.instruments import Instrument
from app.domain.orders import PRICE_DECIMALS, QTY_DECIMALS
from app.domain.rate_limits import RouteClass
from app.domain.risk import RiskLimits

REPO_ROOT = Path(__file__).resolve().parent.parent

# A liquid US universe with plausible reference prices; market data replaces them once it flows.
DEFAULT_UNIVERSE: dict[str, Decimal] = {
    "AAPL": Decimal("230.00"),
    "MSFT": Decimal("420.00"),
    "AMZN": Decimal("190.00"),
    "GOOGL": Decimal("170.00"),
    "NVDA": Decimal("140.00"),
    "SPY": Decimal("580.00"),
    "QQQ": Decimal("500.00"),
    "META": Decimal("560.00"),
    "TSLA": Decimal("250.00"),
    "JPM": Decimal("220.00"),
    "XOM": Decimal("115.00"),
    "IWM": Decimal("220.00"),
}


class SimulatedBrokerSettings(BaseModel):
    """The paper exchange: latency, liquidity and fault injection."""

    latency_ms: float = Field(
        0.0, ge=0, description="mean one-way latency (a placement or cancel waits it twice)"
    )
    latency_jitter_ms: float = Field(0.0, ge=0, description="uniform +/- jitter on latency")
    # The venue has taken the placement; only its answer is late (a timeout then hides a
    # placed order, which reconciliation must find).
    answer_delay_ms: float = Field(0.0, ge=0, description="extra delay of a placement's answer")
    reject_rate: float = Field(0.0, ge=0, le=1, description="share of orders rejected")
    timeout_rate: float = Field(0.0, ge=0, le=1, description="share of calls that hang")
    fail_rate: float = Field(
        0.0, ge=0, le=1, description="share of placement and cancel requests failing unsent"
    )
    # Quantity available at the reference price per match; larger orders fill in parts.
    top_of_book_qty: Decimal = Field(Decimal(10_000), gt=0)


class SymbolDecimals(BaseModel):
    """How finely a symbol trades: decimal places of its prices (2: a cent) and quantities
    (0: whole shares)."""

    model_config = ConfigDict(extra="forbid")

    price: int = Field(2, ge=0, le=PRICE_DECIMALS)
    qty: int = Field(QTY_DECIMALS, ge=0, le=QTY_DECIMALS)


class HttpSettings(BaseModel):
    """The HTTP server's limits on what a client may hold open (a request's body is limited
    by ``max_body_bytes``)."""

    # A request line and headers larger than this are answered 431, before more is read.
    max_header_bytes: int = Field(64 * 1024, ge=1024)
    # A request's head must be complete this long after the connection opens or the
    # previous answer leaves; its body this long after its head (else 408, closed).
    head_timeout_s: float = Field(10.0, gt=0)
    body_timeout_s: float = Field(10.0, gt=0)
    # An idle keep-alive connection is closed after this long.
    keep_alive_timeout_s: int = Field(5, ge=1)


class RiskSettings(BaseModel):
    """Pre-trade risk: the limits of accounts that have none of their own, and how long a
    risk decision may wait for Redis before it fails closed (503 risk.unavailable)."""

    default_limits: RiskLimits = RiskLimits(duplicate_window_ms=500)
    # A Redis that leaves a command unanswered this long is treated as down: the connection
    # is dropped and its waiters fail (a refused connection fails at once). Measured from
    # the command's send, and confirmed after the event loop has read the socket once more,
    # so a busy event loop alone does not trip it.
    redis_timeout_ms: float = Field(80.0, gt=0, le=1000)
    # A worker that missed a limits-changed notice re-reads the limits within this long.
    limits_cache_ttl_s: float = Field(1.0, gt=0, le=1.0)
    # Reservations with no open order behind them (a crash between reserving and writing
    # the order) are released after this long.
    orphan_reservation_after_s: float = Field(10.0, gt=0)


class PacingRuleSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rate: float = Field(gt=0, description="requests per second, on average")
    burst: int = Field(ge=1, description="requests at once from a full bucket")


def _default_pacing() -> dict[Endpoint, PacingRuleSettings]:
    return {
        endpoint: PacingRuleSettings(rate=rule.rate, burst=rule.burst)
        for endpoint, rule in INTERACTIVE_BROKERS_PACING.items()
    }


class BrokerGuardSettings(BaseModel):
    """Pacing (token buckets per broker endpoint, shared through Redis by every worker) and
    the circuit breaker. The default pacing is Interactive Brokers' profile."""

    model_config = ConfigDict(extra="forbid")

    pacing: dict[Endpoint, PacingRuleSettings] = Field(default_factory=_default_pacing)
    # A call waits for a token at most this long; one that would wait longer is refused at
    # once (429 pacing.rate_limited with Retry-After), nothing sent.
    max_wait_ms: float = Field(500.0, ge=0, le=60_000)
    breaker_failure_threshold: int = Field(5, ge=1)
    breaker_open_s: float = Field(60.0, gt=0)
    breaker_half_open_trials: int = Field(3, ge=1)

    @model_validator(mode="after")
    def _every_endpoint_paced(self) -> BrokerGuardSettings:
        # A YAML file or variable names the endpoints it changes; the others keep the profile.
        self.pacing = {**_default_pacing(), **self.pacing}
        return self

    def rule(self, endpoint: Endpoint) -> PacingRule:
        spec = self.pacing[endpoint]
        return PacingRule(spec.rate, spec.burst)

    def breaker(self) -> BreakerPolicy:
        return BreakerPolicy(
            self.breaker_failure_threshold, self.breaker_open_s, self.breaker_half_open_trials
        )


def _rule(rate: float, burst: int) -> PacingRuleSettings:
    return PacingRuleSettings(rate=rate, burst=burst)


class PlacementBatchingSettings(BaseModel):
    """How placements reach the broker. ``latency`` (the default): each order at once, in a
    request of its own. ``throughput``: collected for up to ``max_wait_ms`` or
    ``max_orders``, whichever comes first, and sent as one request (fewer round trips for
    the broker and the gateway; each order waits up to ``max_wait_ms`` more)."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["latency", "throughput"] = "latency"
    max_orders: int = Field(50, ge=1, le=1000)
    max_wait_ms: float = Field(10.0, gt=0, le=1000)


class InboundLimitSettings(BaseModel):
    """Each API key's request budget per class of routes: a token bucket in Redis, shared
    by every worker. Beyond it: 429 rate_limit.exceeded with Retry-After."""

    model_config = ConfigDict(extra="forbid")

    order_entry: PacingRuleSettings = Field(default_factory=lambda: _rule(100, 200))
    cancels: PacingRuleSettings = Field(default_factory=lambda: _rule(100, 200))
    queries: PacingRuleSettings = Field(default_factory=lambda: _rule(50, 100))
    admin_unlimited: bool = True

    def rule(self, route_class: RouteClass) -> PacingRule:
        spec: PacingRuleSettings = getattr(self, route_class.value)
        return PacingRule(spec.rate, spec.burst)


class StreamSettings(BaseModel):
    """The execution report stream: WebSocket ``/v1/stream`` and its Redis Streams."""

    # Reports kept in each account's stream; older ones (or older than max_age_s) are read
    # from the order log instead.
    max_length: int = Field(5_000, ge=10)
    max_age_s: float = Field(24 * 3600.0, gt=0)
    # Frames a subscriber may be behind before it is closed (1013) to resume later.
    queue_size: int = Field(10_000, ge=10)
    heartbeat_s: float = Field(15.0, gt=0)
    auth_timeout_s: float = Field(2.0, gt=0)
    # How often each connection's key is checked again (a revoked key's sockets close).
    key_check_s: float = Field(2.0, gt=0)
    # Browser origins allowed to open the stream; a client that sends no Origin (not a
    # browser) is not checked.
    allowed_origins: list[str] = Field(default_factory=list)
    max_frame_bytes: int = Field(64 * 1024, ge=1024)
    # Each subscriber socket's kernel send buffer: room for ~300 reports in flight (at
    # 100 ms from the subscriber, ~3,000 reports/s), without growing up to the system's
    # maximum for a subscriber that stopped reading.
    send_buffer_bytes: int = Field(256 * 1024, ge=4096)
    # permessage-deflate, for subscribers on slow links: zlib per subscriber per report.
    compression: bool = False
    # WebSocket pings: a peer that does not answer one within ping_timeout_s is dropped.
    ping_interval_s: float = Field(20.0, gt=0)
    ping_timeout_s: float = Field(20.0, gt=0)
    repair_interval_s: float = Field(1.0, gt=0)


class SimulatedFeedSettings(BaseModel):
    """Geometric Brownian motion per symbol: one tick per symbol per round."""

    model_config = ConfigDict(extra="forbid")

    symbols: list[str] | None = None  # None: the whole universe
    drift: float = 0.05  # annual
    volatility: float = Field(0.30, ge=0, le=5)  # annual
    rounds_per_s: float = Field(2.0, gt=0, le=1000)  # wall clock
    # Feed seconds per wall second: at 30, a 1-minute bar completes every 2 s.
    time_scale: float = Field(30.0, gt=0, le=100_000)
    seed: int = 7


class CsvFeedSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: Path | None = None
    speed: float = Field(1.0, ge=0)  # 1: as recorded; 10: ten times faster; 0: at once


class MarketDataSettings(BaseModel):
    """Ticks in, checked, bars out (``ordergate worker``)."""

    model_config = ConfigDict(extra="forbid")

    feed: Literal["none", "simulated", "csv"] = "none"  # besides POST /v1/marketdata/ticks
    simulated: SimulatedFeedSettings = SimulatedFeedSettings()
    csv: CsvFeedSettings = CsvFeedSettings()
    max_ticks_per_request: int = Field(5000, ge=1, le=100_000)
    max_body_bytes: int = Field(1024 * 1024, ge=1024)  # of POST /v1/marketdata/ticks
    # A POSTed tick this far ahead of the gateway's clock is refused (clocks differ a little).
    max_ahead_s: float = Field(60.0, ge=0)
    # What Redis keeps: raw ticks not yet processed must fit (a worker down for a while).
    raw_max_length: int = Field(200_000, ge=1000)
    events_max_length: int = Field(100_000, ge=100)
    dead_max_length: int = Field(10_000, ge=100)
    bars_kept: int = Field(500, ge=10)  # minutes of completed bars (the signals' history)
    batch_size: int = Field(50, ge=1, le=10_000)  # raw batches the processor takes at once


class SignalSettings(BaseModel):
    """The signal worker's raw signals (over completed 1-minute bars plus the last
    price), their orthogonalization and the composite's weights (by signal name; a name
    left out weighs 0)."""

    model_config = ConfigDict(extra="forbid")

    momentum_lookbacks: list[int] = Field(default_factory=lambda: [5, 20, 60])
    reversal_lookback: int = Field(1, ge=1)
    volatility_lookback: int = Field(20, ge=2)
    volume_lookbacks: tuple[int, int] = (5, 20)  # short, long
    method: Literal["residual", "symmetric", "sequential"] = "residual"
    weights: dict[str, float] = Field(
        default_factory=lambda: {
            "momentum_5": 0.10,
            "momentum_20": 0.25,
            "momentum_60": 0.25,
            "reversal_1": 0.20,
            "volatility_20": -0.10,
            "volume_trend_5_20": 0.10,
        }
    )
    consumer: str = "signal-worker"  # the consumer name within the group (one at a time)

    @model_validator(mode="after")
    def _lookbacks(self) -> SignalSettings:
        if not self.momentum_lookbacks or min(self.momentum_lookbacks) < 1:
            raise ValueError("momentum_lookbacks: one or more, each 1 or more")
        short, long = self.volume_lookbacks
        if not 1 <= short < long:
            raise ValueError("volume_lookbacks: (short, long) with 1 <= short < long")
        return self


class StrategySettings(BaseModel):
    """A target-weight strategy on the composite signal (off unless ``enabled``): it
    trades through the same order service as any client, under its own account."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    account: str = "strategy"
    gross_notional: Decimal = Field(Decimal(100_000), gt=0)  # long plus short, at target
    names_per_side: int = Field(3, ge=1)  # long the top N composite, short the bottom N
    min_trade_notional: Decimal = Field(Decimal(1000), ge=0)  # smaller changes wait
    rebalance_interval_s: float = Field(5.0, gt=0)


class MetricsSettings(BaseModel):
    """The SLA the gateway measures itself against, and ``GET /v1/metrics/summary``'s
    rolling window."""

    model_config = ConfigDict(extra="forbid")

    sla_target_ms: float = Field(200.0, gt=0)  # an order entry's answer, end to end
    summary_window_s: float = Field(300.0, ge=10, le=24 * 3600)
    # How often each gateway process keeps a snapshot of the histograms (the window's steps).
    summary_step_s: float = Field(10.0, ge=0.1, le=600)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ORDERGATE_", env_nested_delimiter="__", extra="ignore"
    )

    redis_url: str | None = Field(
        None, validation_alias=AliasChoices("REDIS_URL", "ORDERGATE_REDIS_URL")
    )
    database_url: str | None = Field(
        None, validation_alias=AliasChoices("DATABASE_URL", "ORDERGATE_DATABASE_URL")
    )
    # Where every process of `ordergate serve` writes its metrics (prometheus_client's
    # multiprocess mode; serve sets it). None: this process's own registry.
    prometheus_multiproc_dir: Path | None = Field(
        None, validation_alias=AliasChoices("PROMETHEUS_MULTIPROC_DIR")
    )
    data_dir: Path = REPO_ROOT / ".data"
    migrations_dir: Path = REPO_ROOT / "migrations"

    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    # json: one JSON object per line (request id, account and order id where known);
    # text: the same lines for a human at a terminal.
    log_format: Literal["json", "text"] = "json"
    metrics: MetricsSettings = MetricsSettings()

    # Who applies the broker's execution reports: this process, or a separate
    # `ordergate applier` process (what `ordergate serve` starts).
    applier: Literal["in_process", "external"] = "in_process"
    broker: Literal["simulated"] = "simulated"
    # A placement or cancel unanswered this long is in doubt: 504 broker.timeout, the order
    # `unknown` until reconciliation learns its outcome from the broker.
    broker_timeout_ms: float = Field(100.0, gt=0)
    # Orders per request to the broker in a mass cancel (one paper-exchange script run each).
    mass_cancel_batch: int = Field(500, ge=1, le=10_000)
    placement_batching: PlacementBatchingSettings = PlacementBatchingSettings()
    # How long an order waits for the order log to confirm its write-ahead or its outcome:
    # past it the answer is 503 storage.unavailable, and an order not yet written is never
    # placed (a stalled database must not place orders late, after the client gave up).
    storage_timeout_ms: float = Field(1000.0, gt=0)
    sim: SimulatedBrokerSettings = SimulatedBrokerSettings()
    broker_guard: BrokerGuardSettings = BrokerGuardSettings()
    inbound_limits: InboundLimitSettings = InboundLimitSettings()
    risk: RiskSettings = RiskSettings()
    universe: dict[str, Decimal] = Field(default_factory=lambda: dict(DEFAULT_UNIVERSE))
    # Decimals of every symbol, and of those named in `symbol_decimals` their own.
    decimals: SymbolDecimals = SymbolDecimals()
    symbol_decimals: dict[str, SymbolDecimals] = Field(default_factory=dict)

    max_body_bytes: int = 64 * 1024
    http: HttpSettings = HttpSettings()
    idempotency_ttl_s: int = 24 * 3600
    # An in-flight claim outlives any honest placement; a crashed worker's claim then expires.
    idempotency_inflight_ttl_s: int = 60
    # Orders still pending_new / unknown after this long are reconciled with the broker.
    reconcile_after_s: float = 5.0
    # Every live order is checked with the broker this often (and at once when the venue's
    # state may have been lost): one it no longer knows ends canceled, broker.order_lost.
    live_order_check_interval_s: float = Field(30.0, gt=0)
    auth_cache_ttl_s: float = 1.0
    stream: StreamSettings = StreamSettings()
    marketdata: MarketDataSettings = MarketDataSettings()
    signals: SignalSettings = SignalSettings()
    strategy: StrategySettings = StrategySettings()
    # `ordergate serve` starts `ordergate worker` (market data, signals) beside the applier.
    serve_starts_worker: bool = True

    @model_validator(mode="after")
    def _reconcile_after_the_broker_timeout(self) -> Settings:
        # Reconciliation rejects pending_new orders the broker does not know; an order
        # whose placement is still in flight must not look like one.
        if self.reconcile_after_s * 1000 <= self.broker_timeout_ms:
            raise ValueError("reconcile_after_s must exceed the broker timeout")
        batching = self.placement_batching
        if batching.mode == "throughput" and batching.max_wait_ms * 2 > self.broker_timeout_ms:
            # The broker must have at least as long to answer as a batch may wait to go.
            raise ValueError(
                "placement_batching.max_wait_ms may be at most half of broker_timeout_ms"
            )
        # A reservation with no order row this old is released as never placed; an order
        # still waiting for its pacing token, then its write-ahead, must not look like one.
        waits_ms = self.broker_guard.max_wait_ms + self.storage_timeout_ms
        if self.risk.orphan_reservation_after_s * 1000 <= waits_ms:
            raise ValueError(
                "risk.orphan_reservation_after_s must exceed broker_guard.max_wait_ms"
                " + storage_timeout_ms"
            )
        return self

    def instruments(self) -> dict[str, Instrument]:
        """Every symbol of the universe, with its decimals."""
        return {
            symbol: Instrument(symbol, spec.price, spec.qty)
            for symbol in self.universe
            for spec in (self.symbol_decimals.get(symbol, self.decimals),)
        }

    @model_validator(mode="after")
    def _decimals_of_traded_symbols(self) -> Settings:
        unknown = set(self.symbol_decimals) - set(self.universe)
        if unknown:
            raise ValueError(f"symbol_decimals names symbols not in the universe: {unknown}")
        return self

    @property
    def placement_settle_s(self) -> float:
        """The longest an order that has passed its risk reservation can still be on its way
        to a recorded outcome: its pacing wait, its write-ahead, the placement under the
        broker timeout (which a throughput batch's wait is part of) and the outcome's write."""
        waits_ms = (
            self.broker_guard.max_wait_ms + 2 * self.storage_timeout_ms + self.broker_timeout_ms
        )
        return waits_ms / 1000

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'ordergate.db'}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        # The config path itself can only come from the environment: it picks the file.
        config_path = os.environ.get("ORDERGATE_CONFIG")
        if config_path:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_path))
        return tuple(sources)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
