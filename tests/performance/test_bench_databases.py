"""``python -m bench orders --database postgresql`` at a tiny size: the run's throwaway
database is created, written to by the gateway, and dropped. Never timed."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import make_url

from bench.databases import order_log_url
from bench.orders import BenchOptions, run_orders_bench
from bench.procs import free_port

ADMIN_URL = os.environ.get("TEST_DATABASE_URL")
needs_postgres = pytest.mark.skipif(
    ADMIN_URL is None, reason="TEST_DATABASE_URL is not set: no PostgreSQL to bench against"
)


def _databases() -> set[str]:
    """The benches' throwaway databases (the suite's other process makes and drops test
    databases of its own meanwhile)."""
    assert ADMIN_URL is not None
    dsn = make_url(ADMIN_URL).set(drivername="postgresql").render_as_string(False)

    async def names() -> set[str]:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(
                "SELECT datname FROM pg_database WHERE datname LIKE 'ordergate\\_bench\\_%'"
            )
            return {r[0] for r in rows}
        finally:
            await conn.close()

    return asyncio.run(names())


@needs_postgres
def test_the_gateway_benched_on_postgresql_writes_a_throwaway_database_then_drops_it() -> None:
    assert ADMIN_URL is not None
    before = _databases()
    options = BenchOptions(
        rate=50,
        duration_s=0.5,
        max_duration_s=0.4,
        connections=(2,),
        rounds=2,
        warmup_s=0.2,
        database="postgresql",
        postgres_url=ADMIN_URL,
    )
    seen: list[str] = []

    def progress(message: str) -> None:
        seen.append(message)
        if message.startswith("gateway: open loop"):
            # Mid-run: the run's own database exists beside the ones there before.
            [created] = _databases() - before
            assert created.startswith("ordergate_bench_")

    report = run_orders_bench(options, progress=progress)
    gateway = report.find("gateway", closed=False)
    assert gateway is not None
    assert gateway.ok > 0
    assert gateway.errors == {}, gateway.error_samples
    assert any(m.startswith("order log: PostgreSQL") for m in seen)
    assert _databases() == before


def test_an_unreachable_postgresql_is_named_in_a_clear_error(tmp_path: Path) -> None:
    nobody = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    with (
        pytest.raises(RuntimeError, match="is not reachable"),
        order_log_url("postgresql", nobody, tmp_path),
    ):
        pass
