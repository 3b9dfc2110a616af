"""``ordergate`` command line: serve | applier | worker | migrate | keys | reconcile."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, ExitStack

from app.config import Settings, get_settings
from app.logs import configure_logging, logging_config
from app.process import die_with_parent

log = logging.getLogger("ordergate")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ordergate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve_cmd = commands.add_parser("serve", help="run the gateway (uvicorn)")
    serve_cmd.add_argument("--host", default=None)
    serve_cmd.add_argument("--port", type=int, default=None)
    serve_cmd.add_argument("--workers", type=int, default=1)
    serve_cmd.set_defaults(func=serve)

    applier_cmd = commands.add_parser(
        "applier", help="apply the broker's execution reports (serve starts one)"
    )
    applier_cmd.set_defaults(func=run_applier)

    worker_cmd = commands.add_parser(
        "worker", help="market data and signals, in the background (serve starts one)"
    )
    worker_cmd.set_defaults(func=run_worker)

    migrate_cmd = commands.add_parser("migrate", help="apply database migrations (Alembic)")
    migrate_cmd.add_argument("--revision", default="head")
    migrate_cmd.set_defaults(func=migrate)

    keys_cmd = commands.add_parser("keys", help="manage API keys")
    key_commands = keys_cmd.add_subparsers(dest="keys_command", required=True)
    create_cmd = key_commands.add_parser("create", help="issue a key (printed once)")
    create_cmd.add_argument("--account", required=True, type=_account_name)
    create_cmd.add_argument("--role", choices=["trader", "admin", "viewer"], default="trader")
    create_cmd.set_defaults(func=keys_create)
    revoke_cmd = key_commands.add_parser("revoke", help="revoke a key by its id")
    revoke_cmd.add_argument("--id", required=True)
    revoke_cmd.set_defaults(func=keys_revoke)
    demo_cmd = key_commands.add_parser("demo", help="print the local demo account's key")
    demo_cmd.set_defaults(func=keys_demo)

    status_cmd = commands.add_parser(
        "status", help="the gateway's latency per stage, SLA, throughput and errors (admin key)"
    )
    status_cmd.add_argument(
        "--url", default=None, help="the gateway (default: http://<host>:<port> of the settings)"
    )
    status_cmd.add_argument(
        "--key",
        default=os.environ.get("ORDERGATE_ADMIN_KEY"),
        help="an admin API key (default: $ORDERGATE_ADMIN_KEY)",
    )
    status_cmd.add_argument("--json", action="store_true", help="print the summary as JSON")
    status_cmd.set_defaults(func=status)

    reconcile_cmd = commands.add_parser(
        "reconcile",
        help="resolve orders with the broker, then compare Redis's risk state with the order log",
    )
    reconcile_cmd.add_argument(
        "--check", action="store_true", help="only compare and print the differences"
    )
    reconcile_cmd.add_argument(
        "--account", action="append", type=_account_name, help="this account only (repeatable)"
    )
    reconcile_cmd.set_defaults(func=reconcile)

    args = parser.parse_args(argv)
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    result: int = args.func(args)
    return result


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.redisio.embedded import EmbeddedRedis

    settings = get_settings()
    # uvicorn shuts down on SIGTERM and then raises the signal again for the handler it
    # found: by default that killed this process on the spot, so the applier and the
    # private redis-server died together (by the parent-death signal) and the applier's
    # last iteration failed on a vanished Redis. Exiting through the stack below stops
    # the applier first and Redis last.
    signal.signal(signal.SIGTERM, _exit_normally)
    with ExitStack() as stack:
        if settings.redis_url is None:
            # One private redis-server shared by every worker: idempotency, the paper
            # exchange and the applier lease must be common to all of them.
            embedded = stack.enter_context(EmbeddedRedis())
            os.environ["REDIS_URL"] = embedded.url
            # For the commands an operator runs beside it (`ordergate reconcile`).
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            url_file = settings.data_dir / PRIVATE_REDIS_FILE
            url_file.write_text(embedded.url + "\n")
            stack.callback(url_file.unlink, missing_ok=True)
            get_settings.cache_clear()  # the in-process worker must see it too
            log.info("ordergate: private %s at %s", embedded.server_name, embedded.url)
        if settings.prometheus_multiproc_dir is None:
            # Every process below writes its metrics here, and any worker's /metrics reads
            # them all: the applier's and the worker's too, whatever the number of workers.
            metrics_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="og-metrics-"))
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        # Execution reports are applied by a process of its own, beside the workers.
        os.environ["ORDERGATE_APPLIER"] = "external"
        get_settings.cache_clear()
        stack.enter_context(ChildProcess("applier"))
        if settings.serve_starts_worker:
            stack.enter_context(ChildProcess("worker"))
        uvicorn.run(
            "app.main:create_served_app",
            factory=True,
            host=args.host or settings.host,
            port=args.port or settings.port,
            workers=args.workers,
            loop="uvloop",
            # httptools, with each response's head and body sent in one write.
            http="app.http.server:GatewayHttpProtocol",
            ws="app.http.server:GatewayWebSocketProtocol",
            ws_max_size=settings.stream.max_frame_bytes,
            # Compressing each subscriber's copy of every report (permessage-deflate, on by
            # default in uvicorn) cost more CPU than sending it (docs/performance.md).
            ws_per_message_deflate=settings.stream.compression,
            ws_ping_interval=settings.stream.ping_interval_s,
            ws_ping_timeout=settings.stream.ping_timeout_s,
            access_log=False,
            log_config=logging_config(settings.log_format, settings.log_level),
            log_level=settings.log_level,
            timeout_graceful_shutdown=5,
            timeout_keep_alive=settings.http.keep_alive_timeout_s,
        )
    return 0


def status(args: argparse.Namespace) -> int:
    import json

    from app.status import StatusUnavailable, fetch_summary, render

    if not args.key:
        print("ordergate: give an admin key: --key or ORDERGATE_ADMIN_KEY", file=sys.stderr)
        return 2
    settings = get_settings()
    url = args.url or f"http://{settings.host}:{settings.port}"
    try:
        summary = fetch_summary(url, args.key)
    except StatusUnavailable as exc:
        print(f"ordergate: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2) if args.json else render(summary, url))
    return 0


def reconcile(args: argparse.Namespace) -> int:
    """Resolve unresolved and live orders with the broker (unless ``--check``), then compare
    each account's risk state in Redis with what the order log implies. Exit 1 if they
    differ."""
    from app.runtime import make_applier, open_commands, open_core, open_redis
    from app.services.prices import ReferencePrices
    from app.services.risk import RiskService
    from app.services.risk_audit import AuditResult, RiskAudit
    from app.storage.redis.last_trades import LastTrades
    from app.storage.redis.risk_state import RiskStore
    from app.storage.sql.database import create_engine
    from app.storage.sql.repositories import OrderRepository
    from app.storage.sql.risk_repository import RiskRepository

    settings = get_settings()
    redis_url = settings.redis_url or _private_redis_url(settings)
    if redis_url is None:
        print("ordergate: set REDIS_URL to the gateway's Redis", file=sys.stderr)
        return 2
    settings = settings.model_copy(update={"redis_url": redis_url})

    async def resolve_orders() -> int:
        async with AsyncExitStack() as stack:
            core = await open_core(settings, stack, checkpoints=False)
            applier = make_applier(core, settings)  # not started: its two steps, once
            # An operator's run: each query waits its turn for a pacing token.
            resolved = await applier.reconcile(wait=True)
            return resolved + (await applier.reconcile_live_orders(wait=True)).lost

    async def audit() -> AuditResult:
        # Reads only: no broker, no order log writer (a check changes nothing).
        async with AsyncExitStack() as stack:
            redis = open_commands(redis_url, settings)
            stack.push_async_callback(redis.close)
            notices = open_redis(redis_url)
            stack.push_async_callback(notices.aclose)
            engine = create_engine(settings.effective_database_url)
            stack.push_async_callback(engine.dispose)
            store, repo, orders = RiskStore(redis), RiskRepository(engine), OrderRepository(engine)
            risk = RiskService(
                notices=notices,
                store=store,
                risk_repo=repo,
                orders=orders,
                prices=ReferencePrices(LastTrades(redis), dict(settings.universe)),
                default_limits=settings.risk.default_limits,
            )
            accounts = args.account or (await repo.known_accounts() | await store.accounts())
            return await RiskAudit(risk=risk, store=store).check(accounts)

    if not args.check:
        resolved = asyncio.run(resolve_orders())
        print(f"ordergate: {resolved} orders resolved with the broker", file=sys.stderr)
    result = asyncio.run(audit())

    print(
        f"ordergate: {len(result.accounts)} accounts compared, {len(result.not_loaded)} not in "
        "Redis now (rebuilt from the order log when next used)",
        file=sys.stderr,
    )
    if not result.differences:
        print("risk state agrees with the order log")
        return 0
    print(f"{'account':<20} {'order or symbol':<28} {'field':<12} {'redis':<28} order log")
    for d in result.differences:
        print(f"{d.account:<20} {d.subject:<28} {d.field:<12} {d.redis:<28} {d.order_log}")
    return 1


# Where `serve` leaves the URL of the private redis-server it started.
PRIVATE_REDIS_FILE = "redis.url"


def _private_redis_url(settings: Settings) -> str | None:
    path = settings.data_dir / PRIVATE_REDIS_FILE
    return path.read_text().strip() if path.exists() else None


def _exit_normally(signum: int, frame: object) -> None:
    raise SystemExit(0)


class ChildProcess:
    """Runs ``ordergate <command>`` as a child, restarting it if it dies."""

    def __init__(self, command: str) -> None:
        self._command = command
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name=f"{command}-watch", daemon=True)

    def __enter__(self) -> ChildProcess:
        self._spawn()
        self._watcher.start()
        return self

    def _spawn(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", self._command], preexec_fn=die_with_parent
        )

    def _watch(self) -> None:
        while not self._stopping.wait(1.0):
            code = None if self._process is None else self._process.poll()
            # 0, SIGTERM or SIGINT: it was told to stop (its process group is stopping).
            if code is not None and code not in (0, -signal.SIGTERM, -signal.SIGINT):
                print(f"ordergate: {self._command} exited ({code}); restarting it", file=sys.stderr)
                self._spawn()

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()


def run_applier(args: argparse.Namespace) -> int:
    """Apply execution reports, reconcile lost placements, run the paper exchange's matching.
    Several may run; a Redis lease lets one work at a time."""
    from app.runtime import open_core, start_applier

    settings = get_settings()

    async def start(stack: AsyncExitStack) -> None:
        core = await open_core(settings, stack, checkpoints=True)
        await start_applier(core, settings, stack)

    _run_until_stopped(start)
    return 0


def run_worker(args: argparse.Namespace) -> int:
    """Market data (the configured feed, the tick processor) and the signal worker."""
    from app.worker import start_worker

    settings = get_settings()
    redis_url = settings.redis_url or _private_redis_url(settings)
    if redis_url is None:
        print("ordergate: set REDIS_URL to the gateway's Redis", file=sys.stderr)
        return 2

    async def start(stack: AsyncExitStack) -> None:
        await start_worker(settings, redis_url, stack)

    _run_until_stopped(start)
    return 0


def _run_until_stopped(start: Callable[[AsyncExitStack], Awaitable[None]]) -> None:
    """Start a background process's parts, run until SIGTERM or SIGINT (or the parent
    is gone), then close them in reverse order."""
    import uvloop

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        parent = os.getppid()

        async def watch_parent() -> None:
            # Belt and braces beside the parent-death signal: orphaned, stop.
            while True:
                await asyncio.sleep(1.0)
                if os.getppid() != parent:
                    stop.set()
                    return

        watcher = asyncio.create_task(watch_parent())
        try:
            async with AsyncExitStack() as stack:
                await start(stack)
                # As in the gateway: what start-up allocated lives as long as the process,
                # so full collections (pauses of tens of ms) need not walk it.
                gc.collect()
                gc.freeze()
                await stop.wait()
                # A shutdown that hangs (a dead Redis, a lost database) must not leave a
                # headless process behind.
                loop.call_later(10.0, os._exit, 1)
        finally:
            watcher.cancel()

    uvloop.run(run())


def migrate(args: argparse.Namespace) -> int:
    # Alembic announces each of its plugins at INFO as it is imported, on every run; the
    # migrations it applies (alembic.runtime.migration) stay visible.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    from alembic import command
    from alembic.config import Config

    settings = get_settings()
    config = Config()
    config.set_main_option("script_location", str(settings.migrations_dir))
    # configparser interpolation: a literal % in a password must be doubled.
    config.set_main_option("sqlalchemy.url", settings.effective_database_url.replace("%", "%%"))
    command.upgrade(config, args.revision)
    print(f"ordergate: database at {args.revision}", file=sys.stderr)
    return 0


def _run_with_keys(settings: Settings, action: str, **kwargs: str) -> str:
    from app.services.auth import ApiKeyService, Role
    from app.storage.sql.database import create_engine
    from app.storage.sql.repositories import ApiKeyRepository

    async def run() -> str:
        engine = create_engine(settings.effective_database_url)
        try:
            service = ApiKeyService(ApiKeyRepository(engine))
            if action == "create":
                key_id, key = await service.create(kwargs["account"], Role(kwargs["role"]))
                kept = kwargs.get("kept_in")
                print(
                    f"ordergate: key {key_id} for account {kwargs['account']} "
                    f"({kwargs['role']}); "
                    + (f"kept in {kept}" if kept else "it is shown only now: keep it"),
                    file=sys.stderr,
                )
                return key
            if action == "check":
                await service.authenticate(kwargs["key"])
                return kwargs["key"]
            return "revoked" if await service.revoke(kwargs["key_id"]) else "not found"
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _account_name(value: str) -> str:
    from app.domain.accounts import check_account_name

    try:
        return check_account_name(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def keys_create(args: argparse.Namespace) -> int:
    print(_run_with_keys(get_settings(), "create", account=args.account, role=args.role))
    return 0


def keys_revoke(args: argparse.Namespace) -> int:
    outcome = _run_with_keys(get_settings(), "revoke", key_id=args.id)
    print(f"ordergate: key {args.id} {outcome}", file=sys.stderr)
    return 0 if outcome == "revoked" else 1


def keys_demo(args: argparse.Namespace) -> int:
    """A local convenience: one trader key for account ``demo``, kept in the data dir."""
    from app.domain.errors import NotAuthenticated

    settings = get_settings()
    path = settings.data_dir / "demo-api-key"
    if path.exists():
        key = path.read_text().strip()
        try:
            print(_run_with_keys(settings, "check", key=key))
            return 0
        except NotAuthenticated:
            pass  # a fresh database: issue a new one
    key = _run_with_keys(settings, "create", account="demo", role="trader", kept_in=str(path))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(key + "\n")
    path.chmod(0o600)
    print(key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
