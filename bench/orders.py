"""``python -m bench orders``: the order path against its floor, in one run on one machine.

Sequence: a private redis-server; the gateway migrated, given a trader key and served by one
uvicorn worker; the floor app (``bench.floor``) on the same Redis. Then, from a separate
load-generator process: warm-up of both, an open-loop phase at ``--rate`` against each (latency
from the intended send), and closed-loop phases at each of ``--connections`` against each
(maximum throughput: a target's best closed loop, since one concurrency can leave a target
that waits more than it computes short of saturation). A closed loop runs as ``--rounds``
slices, the two targets taking turns (ABBA), merged per target: on a shared machine whose
speed moves by half within a minute, both targets then see the same moments, and the
gateway/floor ratio holds up better than any absolute number does.

Every process started here is stopped on the way out, on success, error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import make_url

from app.redisio.embedded import EmbeddedRedis
from bench.databases import DEFAULT_POSTGRES_URL, describe, order_log_url
from bench.floor import floor_command
from bench.openloop import LoadProcess, LoadSpec, PhaseResult, merge_phases
from bench.procs import (
    ServerProcess,
    free_port,
    run_command,
    tree_cpu_seconds,
    wait_until_idle,
)
from bench.report import BenchReport, Row, format_table
from bench.stream_clients import launched
from bench.wire import json_post_template

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
ORDERS_PATH = "/v1/orders"
# Buy and sell alternate so the account's position stays flat and no risk limit is reached.
ORDER_BODIES = tuple(
    {
        "symbol": "AAPL",
        "side": side,
        "qty": "1",
        "type": "market",
        "time_in_force": "day",
        # A strategy repeating the same order at a high rate says it means it.
        "allow_duplicate": True,
    }
    for side in ("buy", "sell")
)


@dataclass(frozen=True, slots=True)
class BenchOptions:
    rate: float = 500.0
    duration_s: float = 20.0
    max_duration_s: float = 12.0
    connections: tuple[int, ...] = (32, 128)
    # Each closed loop runs as this many slices of max_duration_s / rounds, the two targets
    # taking turns: the machine's speed moves within seconds, and both must see the same.
    rounds: int = 4
    warmup_s: float = 3.0
    workers: int = 1
    gateway_env: dict[str, str] = field(default_factory=dict)
    logs_dir: Path | None = None
    database: str = "sqlite"
    postgres_url: str = DEFAULT_POSTGRES_URL
    idle_subscribers: int = 0  # stream subscribers connected, of another account

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["logs_dir"] = None if self.logs_dir is None else str(self.logs_dir)
        data["postgres_url"] = make_url(self.postgres_url).render_as_string()  # no password
        return data

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> BenchOptions:
        env: dict[str, str] = {}
        for item in args.gateway_env:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ValueError(f"--gateway-env wants KEY=VALUE, got {item!r}")
            env[key] = value
        return cls(
            rate=getattr(args, "rate", 500.0),  # bench batching names its rates itself
            duration_s=args.duration,
            max_duration_s=args.max_duration,
            connections=args.connections,
            rounds=args.rounds,
            warmup_s=args.warmup,
            workers=args.workers,
            gateway_env=env,
            logs_dir=args.logs,
            database=args.database,
            postgres_url=args.postgres_url,
            idle_subscribers=getattr(args, "idle_subscribers", 0),
        )


@dataclass(frozen=True, slots=True)
class _Target:
    name: str
    port: int
    headers: dict[str, str]
    server: ServerProcess


@dataclass(frozen=True, slots=True)
class _Phase:
    target: _Target
    kind: str  # "warm-up" (not reported), "open loop" or "closed loop"
    duration_s: float
    rate: float | None  # None: closed loop
    connections: int = 8  # open loop: warm connections (more open on demand if replies lag)

    def spec(self, id_prefix: str) -> LoadSpec:
        template = json_post_template(
            HOST,
            self.target.port,
            ORDERS_PATH,
            ORDER_BODIES,
            "client_order_id",
            id_prefix,
            self.target.headers,
        )
        return LoadSpec(
            HOST,
            self.target.port,
            template,
            duration_s=self.duration_s,
            rate=self.rate,
            connections=self.connections,
        )


def _progress(message: str) -> None:
    # Progress goes to stderr so stdout carries only the table.
    print(message, file=sys.stderr, flush=True)


def run_orders_bench(
    options: BenchOptions, progress: Callable[[str], None] = _progress
) -> BenchReport:
    """Start everything, run every phase, stop everything; return what was measured."""
    report = BenchReport(settings=options.as_json())
    run_tag = secrets.token_hex(3)  # client_order_ids stay unique across runs on one Redis
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="og-bench-")))
        if options.logs_dir is not None:
            # Registered early, so it runs late: after the servers stop, before tmp goes.
            stack.callback(_keep_logs, tmp, options.logs_dir)
        progress("starting redis-server")
        redis = EmbeddedRedis(port=free_port()).start()
        stack.callback(redis.stop)
        progress(describe(options.database, options.postgres_url))
        database_url = stack.enter_context(
            order_log_url(options.database, options.postgres_url, tmp)
        )
        env = _environment(tmp, redis.url, database_url, options.gateway_env)
        gateway = stack.enter_context(_start_gateway(env, tmp, progress, options.workers))
        if options.idle_subscribers:
            stack.enter_context(_idle_subscribers(env, gateway.port, options.idle_subscribers))
        floor = stack.enter_context(_start_floor(env, tmp, redis.url, progress))
        load = stack.enter_context(LoadProcess())
        targets = (floor, gateway)
        servers = [target.server for target in targets]

        phases = [_Phase(t, "warm-up", options.warmup_s, options.rate) for t in targets]
        phases += [_Phase(t, "open loop", options.duration_s, options.rate) for t in targets]
        rounds = options.rounds
        for connections in options.connections:
            for turn in range(rounds):
                # ABBA: neither target always goes first after the other's backlog.
                for t in targets if turn % 2 == 0 else targets[::-1]:
                    phases.append(
                        _Phase(t, "closed loop", options.max_duration_s / rounds, None, connections)
                    )
        measured: dict[tuple[str, str], list[_Measured]] = {}
        for number, phase in enumerate(phases):
            if phase.duration_s <= 0:
                continue
            if not wait_until_idle(servers):
                progress("a server is still busy from the last phase; measuring anyway")
            concurrency = f" c={phase.connections}" if phase.rate is None else ""
            cpu_before = phase.target.server.cpu_seconds(), tree_cpu_seconds(redis.pid)
            result = load.run(phase.spec(f"bench-{run_tag}-{number:03d}-"))
            cpu_after = phase.target.server.cpu_seconds(), tree_cpu_seconds(redis.pid)
            progress(
                f"{phase.target.name}: {phase.kind}{concurrency}, {phase.duration_s:g} s: "
                f"{result.achieved_per_s:.0f}/s"
            )
            if result.ok == 0:
                first = {k: " ".join(v.split())[:160] for k, v in result.error_samples.items()}
                raise RuntimeError(
                    f"{phase.target.name} answered no request with 2xx: {result.errors}; "
                    f"first answers: {first}"
                )
            if phase.kind != "warm-up":
                cpu = [_delta(b, a) for b, a in zip(cpu_before, cpu_after, strict=True)]
                slices = measured.setdefault((phase.target.name, result.mode), [])
                slices.append(_Measured(result, cpu[0], cpu[1]))
        # In the order first measured: open loops, then each concurrency, floor first.
        for (target, _mode), slices in measured.items():
            result = merge_phases([m.result for m in slices])
            server_us, redis_us = (
                _per_request_us(_sum(m.server_cpu_s for m in slices), result.ok),
                _per_request_us(_sum(m.redis_cpu_s for m in slices), result.ok),
            )
            report.rows.append(Row(target, result, server_us, redis_us))
    return report


@dataclass(frozen=True, slots=True)
class _Measured:
    """One measured slice and the CPU it cost (seconds; None where unmeasurable)."""

    result: PhaseResult
    server_cpu_s: float | None
    redis_cpu_s: float | None


def _delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def _sum(values: Iterator[float | None]) -> float | None:
    total = 0.0
    for value in values:
        if value is None:
            return None
        total += value
    return total


def _per_request_us(cpu_s: float | None, answered: int) -> float | None:
    if cpu_s is None or answered <= 0:
        return None
    return cpu_s / answered * 1e6


def _keep_logs(tmp: Path, destination: Path) -> None:
    destination.mkdir(parents=True, exist_ok=True)
    for log in tmp.glob("*.log"):
        shutil.copy2(log, destination / log.name)


UNLIMITED_ORDER_FLOW = {
    "ORDERGATE_BROKER_GUARD__PACING__ORDER_PLACEMENT__RATE": "1000000",
    "ORDERGATE_BROKER_GUARD__PACING__ORDER_PLACEMENT__BURST": "1000000",
    # and the bench's one API key's own order-entry budget (100 a second by default)
    "ORDERGATE_INBOUND_LIMITS__ORDER_ENTRY__RATE": "1000000",
    "ORDERGATE_INBOUND_LIMITS__ORDER_ENTRY__BURST": "1000000",
}


def _environment(
    tmp: Path, redis_url: str, database_url: str, extra: dict[str, str]
) -> dict[str, str]:
    """The servers' environment: this run's files and Redis, the issue's broker settings."""
    # Not whatever ORDERGATE_* the shell has (a production ORDERGATE_CONFIG, say): the run's
    # conditions are fixed here, and --gateway-env changes them explicitly.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("ORDERGATE_")}
    return {
        **inherited,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "ORDERGATE_DATA_DIR": str(tmp),
        "ORDERGATE_SIM__LATENCY_MS": "0",  # the condition: a zero-latency broker
        # The gateway itself is measured, not a broker's pacing or a key's request budget:
        # both far above any offered load (the defaults allow 40 and 100 orders a second).
        **UNLIMITED_ORDER_FLOW,
        **extra,
    }


@contextlib.contextmanager
def _start_gateway(
    env: dict[str, str],
    tmp: Path,
    progress: Callable[[str], None],
    workers: int = 1,
    *,
    with_key: bool = True,
) -> Iterator[_Target]:
    """Migrate, create the bench account's trader key (unless not ``with_key``: the caller
    makes its own), serve."""
    cli = [sys.executable, "-m", "app.cli"]
    progress("gateway: migrate, create key, serve")
    run_command([*cli, "migrate"], env)
    headers: dict[str, str] = {}
    if with_key:
        out = run_command([*cli, "keys", "create", "--account", "bench", "--role", "trader"], env)
        lines = out.strip().splitlines()
        if not lines:
            raise RuntimeError("`keys create` printed no key")
        headers["Authorization"] = f"Bearer {lines[-1].strip()}"
    port = free_port()
    server = ServerProcess(
        "gateway",
        [*cli, "serve", "--host", HOST, "--port", str(port), "--workers", str(workers)],
        env,
        tmp / "gateway.log",
    )
    with server:
        server.start(port, "/readyz")
        yield _Target("gateway", port, headers, server)


@contextlib.contextmanager
def _idle_subscribers(env: dict[str, str], port: int, count: int) -> Iterator[None]:
    """``count`` stream subscribers of a quiet account, in a process of their own."""
    cli = [sys.executable, "-m", "app.cli"]
    out = run_command([*cli, "keys", "create", "--account", "quiet", "--role", "viewer"], env)
    key = out.strip().splitlines()[-1].strip()
    with launched(f"ws://{HOST}:{port}/v1/stream", count, key=key, env=env):
        yield


@contextlib.contextmanager
def _start_floor(
    env: dict[str, str], tmp: Path, redis_url: str, progress: Callable[[str], None]
) -> Iterator[_Target]:
    progress("floor: serve")
    port = free_port()
    argv = floor_command(HOST, port, redis_url)
    with ServerProcess("floor", argv, env, tmp / "floor.log") as server:
        server.start(port, "/healthz")
        # The same header as the gateway gets, so both parse requests of the same size.
        yield _Target("floor", port, {"Authorization": "Bearer floor-ignores-this"}, server)


def exit_code(name: str, body: Callable[[], None]) -> int:
    """Run a benchmark's ``body``: 0, or 1 saying why it failed, or 130 if interrupted
    (whatever it started has been stopped by then)."""
    try:
        body()
    except KeyboardInterrupt:
        _progress("interrupted; everything started has been stopped")
        return 130
    except (RuntimeError, ValueError, OSError, subprocess.SubprocessError) as exc:
        _progress(f"bench {name} failed: {exc}")
        return 1
    return 0


def command(args: argparse.Namespace) -> int:
    """Entry point of ``python -m bench orders``: run, print the table, maybe write JSON."""

    def body() -> None:
        options = BenchOptions.from_args(args)
        report = run_orders_bench(options)
        print(describe(options.database, options.postgres_url), flush=True)
        print(format_table(report), flush=True)
        if args.json is not None:
            report.write_json(args.json)
            _progress(f"wrote {args.json}")

    return exit_code("orders", body)


def main(argv: list[str] | None = None) -> int:
    from bench import add_orders_arguments

    parser = argparse.ArgumentParser(prog="python -m bench.orders", description=__doc__)
    add_orders_arguments(parser)
    return command(parser.parse_args(argv))


# Only a __main__ guard: LoadProcess spawns a child that re-imports this module.
if __name__ == "__main__":
    sys.exit(main())
