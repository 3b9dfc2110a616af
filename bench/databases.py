"""The order log a benchmark's gateway writes to: a SQLite file in the run's directory, or a
throwaway database on a PostgreSQL server, created for the run and dropped after it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import asyncpg
from sqlalchemy import make_url

DATABASES = ("sqlite", "postgresql")
# Where `--database postgresql` creates its throwaway database (a role that may CREATE
# DATABASE); the machine's own server unless the environment names another.
DEFAULT_POSTGRES_URL = os.environ.get(
    "ORDERGATE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def describe(database: str, postgres_url: str) -> str:
    if database == "sqlite":
        return "order log: SQLite (a file in the run's temporary directory)"
    server = make_url(postgres_url)
    return f"order log: PostgreSQL (a throwaway database on {server.host}:{server.port or 5432})"


@contextlib.contextmanager
def order_log_url(database: str, postgres_url: str, tmp: Path) -> Iterator[str]:
    """The gateway's DATABASE_URL for this run; a PostgreSQL database is dropped after."""
    if database == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
        return
    admin = make_url(postgres_url).set(drivername="postgresql")
    name = f"ordergate_bench_{secrets.token_hex(4)}"
    _admin_execute(admin.render_as_string(hide_password=False), f'CREATE DATABASE "{name}"')
    try:
        url = admin.set(drivername="postgresql+asyncpg", database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        _admin_execute(
            admin.render_as_string(hide_password=False),
            f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
        )


def unreachable(postgres_url: str) -> str | None:
    """Why the PostgreSQL server at ``postgres_url`` cannot make a benchmark's database, or
    None if it can be reached."""
    admin = make_url(postgres_url).set(drivername="postgresql")
    try:
        _admin_execute(admin.render_as_string(hide_password=False), "SELECT 1")
    except RuntimeError as exc:
        return str(exc)
    return None


def _admin_execute(dsn: str, sql: str) -> None:
    async def run() -> None:
        try:
            conn = await asyncpg.connect(dsn, timeout=5)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            where = make_url(dsn).render_as_string()
            raise RuntimeError(
                f"PostgreSQL at {where} is not reachable ({exc!r}); "
                "name a server with --postgres-url or ORDERGATE_BENCH_POSTGRES_URL"
            ) from exc
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())
