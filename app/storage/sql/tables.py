"""SQL schema (SQLAlchemy Core). Alembic migrations in migrations/ create exactly this."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any, overload

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import TypeEngine


class ExactDecimal(TypeDecorator[Decimal]):
    """NUMERIC on PostgreSQL; text on SQLite, whose NUMERIC affinity would store binary floats."""

    impl = Numeric(38, 12)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(64))
        return dialect.type_descriptor(Numeric(38, 12, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None or dialect.name != "sqlite":
            return value
        return sqlite_decimal(value)

    def process_result_value(self, value: str | Decimal | None, dialect: Dialect) -> Decimal | None:
        return decimal_from_db(value)


@overload
def decimal_from_db(value: str | Decimal) -> Decimal: ...
@overload
def decimal_from_db(value: None) -> None: ...
@overload
def decimal_from_db(value: str | Decimal | None) -> Decimal | None: ...
def decimal_from_db(value: str | Decimal | None) -> Decimal | None:
    """An ``ExactDecimal`` as stored: text on SQLite, a padded NUMERIC on PostgreSQL
    (1.000000000000), read back as the value."""
    if value is None:
        return None
    number = Decimal(value)
    if number == number.to_integral_value():
        return number.quantize(Decimal(1))
    return number.normalize()


def sqlite_decimal(value: Decimal) -> str:
    """An ``ExactDecimal`` as SQLite stores it: exact text, never exponent notation."""
    return format(value, "f")


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on the way out, whatever the backend stored."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return utc_from_db(value)


@overload
def utc_from_db(value: str | datetime) -> datetime: ...
@overload
def utc_from_db(value: None) -> None: ...
@overload
def utc_from_db(value: str | datetime | None) -> datetime | None: ...
def utc_from_db(value: str | datetime | None) -> datetime | None:
    """A ``UtcDateTime`` as stored: SQLAlchemy's text on SQLite (``2026-11-24
    21:45:00.123456``, UTC), an aware timestamp on PostgreSQL."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def sqlite_timestamp(value: datetime) -> str:
    """A ``UtcDateTime`` as SQLAlchemy stores it on SQLite (``2026-11-24 21:45:00.123456``),
    for writes that bypass SQLAlchemy's statements."""
    if value.tzinfo is None:
        raise ValueError("naive datetime")
    # One order's two timestamps are written five times (created, updated, two events, the
    # transition): remembered, by instant and offset, as equal instants in other offsets
    # have other wall clocks.
    return _wall_clock(value, value.utcoffset())


@lru_cache(maxsize=1024)
def _wall_clock(value: datetime, _offset: timedelta | None) -> str:
    # The wall-clock fields, as SQLAlchemy writes them (the offset is not stored): the
    # ISO form without its "+00:00" costs less than rebuilding the datetime without it.
    return value.isoformat(" ", "microseconds")[:26]


metadata = MetaData()

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("account", String(64), nullable=False, index=True),
    Column("role", String(16), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime, nullable=True),
)

orders = Table(
    "orders",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("account", String(64), nullable=False),
    Column("client_order_id", String(64), nullable=False),
    Column("symbol", String(16), nullable=False),
    Column("side", String(4), nullable=False),
    Column("qty", ExactDecimal, nullable=False),
    Column("type", String(8), nullable=False),
    Column("limit_price", ExactDecimal, nullable=True),
    Column("time_in_force", String(4), nullable=False),
    Column("status", String(16), nullable=False),
    Column("filled_qty", ExactDecimal, nullable=False),
    Column("avg_fill_price", ExactDecimal, nullable=True),
    Column("reject_reason", String(64), nullable=True),
    Column("request_hash", String(64), nullable=False),
    Column("exec_seq", Integer, nullable=False, default=0),
    # The first answer given for this order, replayed byte for byte on an idempotent retry
    # when Redis no longer holds it.
    Column("ack_status", Integer, nullable=True),
    Column("ack_body", Text, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("account", "client_order_id", name="uq_orders_account_client_order_id"),
    Index("ix_orders_account_id", "account", "id"),
    Index("ix_orders_status", "status"),
)

order_events = Table(
    "order_events",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("order_id", String(26), ForeignKey("orders.id"), nullable=False, index=True),
    Column("account", String(64), nullable=False),
    Column("from_status", String(16), nullable=True),
    Column("to_status", String(16), nullable=False),
    Column("reason", String(64), nullable=True),
    Column("exec_id", String(64), nullable=True),
    Column("at", UtcDateTime, nullable=False),
    # The account's execution report sequence (see account_sequences), and the order's
    # fill state and the position after the event: the report, rebuilt from the log.
    Column("seq", BigInteger, nullable=True),
    Column("cum_qty", ExactDecimal, nullable=True),
    Column("avg_price", ExactDecimal, nullable=True),
    Column("position_qty", ExactDecimal, nullable=True),
    Index("order_events_account_seq", "account", "seq", unique=True),
    # The events still to be numbered (PostgreSQL numbers them after their commit).
    Index(
        "order_events_unnumbered",
        "id",
        postgresql_where=text("seq IS NULL"),
        sqlite_where=text("seq IS NULL"),
    ),
)

# Each account's last execution report number, taken where events are numbered (see
# storage/sql/executions.py).
account_sequences = Table(
    "account_sequences",
    metadata,
    Column("account", String(64), primary_key=True),
    Column("last_seq", BigInteger, nullable=False),
)

fills = Table(
    "fills",
    metadata,
    Column("exec_id", String(64), primary_key=True),
    Column("order_id", String(26), ForeignKey("orders.id"), nullable=False, index=True),
    Column("account", String(64), nullable=False),
    Column("symbol", String(16), nullable=False),
    Column("side", String(4), nullable=False),
    Column("qty", ExactDecimal, nullable=False),
    Column("price", ExactDecimal, nullable=False),
    Column("at", UtcDateTime, nullable=False),
)

positions = Table(
    "positions",
    metadata,
    Column("account", String(64), primary_key=True),
    Column("symbol", String(16), primary_key=True),
    Column("qty", ExactDecimal, nullable=False),
    Column("avg_price", ExactDecimal, nullable=False),
    Column("realized_pnl", ExactDecimal, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

# Where the execution applier stands in the broker's report stream; advanced in the same
# transaction as the reports it covers, so a crash neither loses nor re-applies one.
stream_cursors = Table(
    "stream_cursors",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("position", String(64), nullable=False),
)

# Pre-trade limits per account: the source of truth that Redis and every worker cache.
# Stored as the API's JSON document (validated by ``RiskLimits`` on the way in and out).
risk_limits = Table(
    "risk_limits",
    metadata,
    Column("account", String(64), primary_key=True),
    Column("limits", Text, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("updated_by", String(64), nullable=False),
)

# Current kill switches: scope 'global' (account '') or 'account'. ``generation`` is the id
# of the audit row that set it, so a stale copy in Redis can never overwrite a newer one.
kill_switches = Table(
    "kill_switches",
    metadata,
    Column("scope", String(8), primary_key=True),
    Column("account", String(64), primary_key=True),
    Column("active", Boolean, nullable=False),
    Column("generation", BigInteger, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("updated_by", String(64), nullable=False),
)

# Append-only record of every risk control change: who, when, what.
risk_audit = Table(
    "risk_audit",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("at", UtcDateTime, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("action", String(32), nullable=False),
    Column("scope", String(8), nullable=False),
    Column("account", String(64), nullable=False),
    Column("detail", Text, nullable=False),
)
