"""Engines: SQLite (WAL) by default, PostgreSQL through asyncpg when DATABASE_URL says so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, make_url
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

# Every statement planned for its own parameters (see ``create_engine``), and an index
# probe costed as what it is for the order log's rows, which stay in memory: the default
# random_page_cost (4, a spinning disk's) had a batch's probes of the fills' primary key
# lose to a scan of the whole table while it held thousands of rows.
POSTGRES_SETTINGS = {"plan_cache_mode": "force_custom_plan", "random_page_cost": "1.1"}
POSTGRES_CONNECT_TIMEOUT_S = 2.0


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_writer_engine(url: str) -> AsyncEngine | Engine:
    """The order log's engine: on SQLite a synchronous one, whose stdlib connection the
    order log drives itself (on the event loop, its own BEGIN IMMEDIATE, the lock never
    waited for inside SQLite: see OrderLog); else async."""
    if not is_sqlite(url):
        return create_engine(url, writer=True)
    sync_url = make_url(url).set(drivername="sqlite+pysqlite")
    _ensure_directory(sync_url.database)
    engine = sa_create_engine(sync_url, poolclass=StaticPool, connect_args={"timeout": 0})
    _configure_sqlite(engine, immediate=False, busy_timeout_ms=0, autocheckpoint=False)
    return engine


def create_engine(url: str, *, writer: bool = False, pool_size: int = 5) -> AsyncEngine:
    """An engine for readers, or (``writer=True``) the single connection the order log uses.

    On SQLite the writer takes the write lock at BEGIN (``BEGIN IMMEDIATE``), so transactions
    from several processes serialise instead of failing to upgrade a read snapshot.
    """
    if not is_sqlite(url):
        postgres = create_async_engine(
            url,
            pool_size=1 if writer else pool_size,
            max_overflow=0 if writer else 10,
            pool_pre_ping=True,
            connect_args={
                # asyncpg prepares every statement once per connection, and after five
                # runs PostgreSQL keeps a generic plan made from the statistics of that
                # moment: on a new, empty order log, a sequential scan, kept as it grows.
                "server_settings": POSTGRES_SETTINGS,
                "timeout": POSTGRES_CONNECT_TIMEOUT_S,
            },
        )
        _refusals_as_database_errors(postgres)
        return postgres
    _ensure_directory(make_url(url).database)
    engine = create_async_engine(
        url,
        pool_size=1 if writer else pool_size,
        max_overflow=0 if writer else 10,
        connect_args={"timeout": 30},
    )
    _configure_sqlite(engine, immediate=writer)
    return engine


def _refusals_as_database_errors(engine: AsyncEngine) -> None:
    """A server that refuses or never answers a connection is a database error like any
    other (a ``DBAPIError``, answered 503), not the socket's bare OSError."""

    @event.listens_for(engine.sync_engine, "do_connect")
    def _connect(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        try:
            return dialect.loaded_dbapi.connect(*cargs, **cparams)
        except (OSError, TimeoutError) as exc:
            raise dialect.loaded_dbapi.OperationalError(f"cannot connect: {exc!r}") from exc


def _ensure_directory(database: str | None) -> None:
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def _configure_sqlite(
    engine: AsyncEngine | Engine,
    *,
    immediate: bool,
    busy_timeout_ms: int = 30000,
    autocheckpoint: bool = True,
) -> None:
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver so BEGIN is ours to issue.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives a killed process; FULL adds an fsync per
        # commit for power loss. Production durability is PostgreSQL's.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        if not autocheckpoint:
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
