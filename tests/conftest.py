"""Fixtures that start real things: a private redis-server, a throwaway database (SQLite file,
or PostgreSQL when TEST_DATABASE_URL is set), and the gateway as a real uvicorn process."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis
from sqlalchemy import make_url

from app.redisio.embedded import EmbeddedRedis
from bench.procs import free_port  # one for the bench and the tests

REPO = Path(__file__).resolve().parent.parent


def _postgres_note() -> str:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return f"PostgreSQL variants: run, against {make_url(url).render_as_string()}"
    return "PostgreSQL variants: NOT RUN (TEST_DATABASE_URL is not set): SQLite only"


def pytest_report_header() -> str:
    return _postgres_note()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # Said again at the end, where a reader of the run looks.
    terminalreporter.write_sep("-", _postgres_note())


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(port=free_port()) as server:
        yield server


class ThrowawayDatabases:
    """Creates databases on the TEST_DATABASE_URL server and drops them at the end."""

    def __init__(self, admin_url: str) -> None:
        self._admin = make_url(admin_url)
        self._created: list[str] = []

    def _execute(self, sql: str) -> None:
        async def run() -> None:
            dsn = self._admin.set(drivername="postgresql").render_as_string(hide_password=False)
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        # In a thread: fixtures may be set up while the test's event loop is running.
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(asyncio.run, run()).result()

    def create(self) -> str:
        name = f"ordergate_test_{secrets.token_hex(4)}"
        self._execute(f'CREATE DATABASE "{name}"')
        self._created.append(name)
        return self._admin.set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        for name in self._created:
            self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _backends() -> list[str]:
    return ["sqlite", "postgres"] if os.environ.get("TEST_DATABASE_URL") else ["sqlite"]


@pytest.fixture(scope="session")
def database_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(tmp_path_factory)
    yield factory
    factory.close()


class DatabaseFactory:
    def __init__(self, tmp: pytest.TempPathFactory) -> None:
        self._tmp = tmp
        url = os.environ.get("TEST_DATABASE_URL")
        self._postgres = ThrowawayDatabases(url) if url else None

    def create(self, backend: str) -> str:
        if backend == "sqlite":
            return f"sqlite+aiosqlite:///{self._tmp.mktemp('db') / 'ordergate.db'}"
        assert self._postgres is not None
        return self._postgres.create()

    def close(self) -> None:
        if self._postgres is not None:
            self._postgres.drop_all()


@dataclass
class Gateway:
    """A running gateway process and API keys for a few accounts and roles."""

    base_url: str
    database_url: str
    redis_url: str | None  # None: serve starts a private redis-server
    env: dict[str, str]
    workers: int
    keys: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def run_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``ordergate <args>`` against this gateway's Redis and database."""
        return subprocess.run(
            [sys.executable, "-m", "app.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def agrees_with_the_order_log(self, within: float = 0.0) -> None:
        """``ordergate reconcile --check``: Redis's risk state agrees with the order log
        (``within``: at the latest this many seconds from now, checking again meanwhile)."""
        deadline = time.monotonic() + within
        while True:
            result = self.run_cli("reconcile", "--check")
            if result.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert result.returncode == 0, result.stdout + result.stderr

    def cli(self, *args: str) -> str:
        result = self.run_cli(*args)
        if result.returncode != 0:
            raise RuntimeError(f"ordergate {' '.join(args)} failed: {result.stderr}")
        return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""

    def new_key(self, account: str, role: str = "trader") -> str:
        return self.cli("keys", "create", "--account", account, "--role", role)

    def client(self, key: str | None = None, **kwargs: object) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=15.0, **kwargs)  # type: ignore[arg-type]

    def start(self) -> None:
        port = int(self.base_url.rsplit(":", 1)[1])
        assert self.log_path is not None
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(self.workers),
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gateway not ready: {self.log_path.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None


def launch_gateway(
    tmp: Path,
    database_url: str,
    redis_url: str | None,
    workers: int = 2,
    extra_env: dict[str, str] | None = None,
) -> Gateway:
    tmp.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERGATE_")}
    env.update(
        {
            "DATABASE_URL": database_url,
            "ORDERGATE_DATA_DIR": str(tmp),
            "ORDERGATE_RECONCILE_AFTER_S": "1.5",
            "ORDERGATE_AUTH_CACHE_TTL_S": "0.2",
            # The suite loads a shared 2-core machine: a placement's 100 ms default could
            # expire under that load alone. The timeout tests set their own.
            "ORDERGATE_BROKER_TIMEOUT_MS": "1000",
            # Small top of book so partial fills are easy to provoke.
            "ORDERGATE_SIM__TOP_OF_BOOK_QTY": "100",
            # Tests send orders faster than a broker's pacing allows (40 a second by
            # default); the pacing tests set their own.
            "ORDERGATE_BROKER_GUARD__PACING__ORDER_PLACEMENT__RATE": "1000000",
            "ORDERGATE_BROKER_GUARD__PACING__ORDER_PLACEMENT__BURST": "1000000",
            # The same for each key's own request budget; the rate limit tests set theirs.
            **{
                f"ORDERGATE_INBOUND_LIMITS__{kind}__{field}": "1000000"
                for kind in ("ORDER_ENTRY", "CANCELS", "QUERIES")
                for field in ("RATE", "BURST")
            },
            "PYTHONPATH": str(REPO),
        }
    )
    if redis_url is not None:  # else serve starts a private redis-server
        env["REDIS_URL"] = redis_url
    env.update(extra_env or {})
    gateway = Gateway(
        base_url=f"http://127.0.0.1:{free_port()}",
        database_url=database_url,
        redis_url=redis_url,
        env=env,
        workers=workers,
        log_path=tmp / "gateway.log",
    )
    gateway.cli("migrate")
    gateway.start()
    return gateway


@pytest.fixture(scope="session", params=_backends())
def gateway(
    request: pytest.FixtureRequest,
    redis_server: EmbeddedRedis,
    database_factory: DatabaseFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    """The shared gateway: two uvicorn workers, real Redis, real database."""
    backend: str = request.param
    redis_db = 1 if backend == "sqlite" else 2  # separate Redis state per backend
    redis_url = redis_server.url.rsplit("/", 1)[0] + f"/{redis_db}"
    # pytest may set this fixture up more than once per backend (its reordering of the
    # session's tests is not perfect): each gateway starts from an empty Redis, as from a
    # new database, not with an earlier one's report stream to wade through.
    with redis.Redis.from_url(redis_url) as stale:
        stale.flushdb()
    gw = launch_gateway(
        tmp_path_factory.mktemp(f"gw-{backend}"), database_factory.create(backend), redis_url
    )
    gw.keys = {
        "alice": gw.new_key("alice", "trader"),
        "bob": gw.new_key("bob", "trader"),
        "viewer": gw.new_key("alice", "viewer"),
        "admin": gw.new_key("ops", "admin"),
    }
    yield gw
    gw.stop()


Launch = Callable[..., Gateway]


@pytest.fixture
def fresh(
    redis_server: EmbeddedRedis, database_factory: DatabaseFactory, tmp_path: Path
) -> Iterator[Launch]:
    """Launch gateways with a clean Redis db and database each; stop them at the end."""
    launched: list[Gateway] = []

    def launch(backend: str = "sqlite", workers: int = 1, **env: str) -> Gateway:
        redis_url = redis_server.url.rsplit("/", 1)[0] + f"/{4 + len(launched)}"
        gateway = launch_gateway(
            tmp_path / f"gw{len(launched)}",
            database_factory.create(backend),
            redis_url,
            workers=workers,
            extra_env=env,
        )
        launched.append(gateway)
        return gateway

    yield launch
    for gateway in launched:
        gateway.stop()
    for index in range(len(launched)):
        flush = redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + f"/{4 + index}")
        flush.flushdb()
        flush.close()


@pytest.fixture
async def alice(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway.client(gateway.keys["alice"]) as client:
        yield client


@pytest.fixture
async def admin(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway.client(gateway.keys["admin"]) as client:
        yield client


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], within: float = 5.0, interval: float = 0.05
) -> None:
    """Poll an async predicate until it holds (the broker's reports arrive asynchronously)."""
    deadline = time.monotonic() + within
    while True:
        if await predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)
