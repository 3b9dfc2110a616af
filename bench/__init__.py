"""The benchmarks: ``python -m bench BENCHMARK`` (``make bench`` runs them all, each also
has a ``make bench-...`` target). Not part of the gateway's package: they run from a source
checkout, beside it.

Only argument parsing lives here; each benchmark module is imported when it runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.databases import DATABASES, DEFAULT_POSTGRES_URL


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="run a benchmark and print its numbers"
    )
    kinds = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    orders = kinds.add_parser(
        "orders",
        help="order path vs a minimal FastAPI+Redis floor: open-loop latency, max throughput",
        description=(
            "Start a private Redis, the gateway and a floor endpoint; drive both at a constant "
            "arrival rate and then at fixed concurrency; print throughput and P50/P95/P99."
        ),
    )
    add_orders_arguments(orders)
    orders.set_defaults(func=_run_orders)
    risk = kinds.add_parser(
        "risk",
        help="the pre-trade risk decision alone vs plain Redis GETs: open-loop P50/P95/P99",
        description=(
            "In process, against REDIS_URL or a private Redis: RiskService.reserve (limits "
            "cache, static checks, one Lua round trip) and a plain GET through the same client, "
            "interleaved at a constant arrival rate, then at fixed concurrency."
        ),
    )
    add_risk_arguments(risk)
    risk.set_defaults(func=_run_risk)
    mass_cancel = kinds.add_parser(
        "mass-cancel",
        help="DELETE /v1/orders over N resting orders at the paper exchange: seconds",
        description=(
            "Start a private Redis and the gateway; place N resting orders; time the mass "
            "cancel; several runs, each on a new order log; print each run and the median."
        ),
    )
    mass_cancel.add_argument(
        "--orders", type=positive_int, default=2000, help="resting orders (2000)"
    )
    mass_cancel.add_argument("--runs", type=positive_int, default=3, help="runs (3)")
    mass_cancel.add_argument(
        "--database", choices=DATABASES, default="sqlite", help="the order log (sqlite)"
    )
    mass_cancel.add_argument(
        "--postgres-url",
        default=DEFAULT_POSTGRES_URL,
        help="where --database postgresql makes its throwaway database",
    )
    mass_cancel.set_defaults(func=_run_mass_cancel)
    batching = kinds.add_parser(
        "batching",
        help="the order bench with placement batching off and on, at the same rates",
        description=(
            "For each rate, whole order-bench runs (gateway and floor) with placement "
            "batching off (latency) and on (throughput), taking turns; prints the medians."
        ),
    )
    add_orders_arguments(batching, one_rate=False)
    batching.add_argument(
        "--rates", type=_rates, default=[500.0, 2000.0], help="open-loop rates (500,2000)"
    )
    batching.add_argument("--runs", type=positive_int, default=3, help="runs per mode (3)")
    # Shorter phases than bench orders: 2 modes x 2 rates x 3 runs.
    batching.set_defaults(
        func=_run_batching, duration=8.0, warmup=1.0, max_duration=4.0, connections=(128,)
    )
    stream = kinds.add_parser(
        "stream",
        help="execution reports to WebSocket subscribers vs a Redis-Streams fan-out floor",
        description=(
            "Start a private Redis, the gateway and the stream floor; subscribers in a "
            "process of their own follow the bench account while orders arrive at a "
            "constant rate; print each target's report latency P50/P95/P99 per rate."
        ),
    )
    stream.add_argument("--subscribers", type=positive_int, default=100, help="(100)")
    stream.add_argument(
        "--rates", type=_rates, default=[200.0], help="reports a second, comma-separated (200)"
    )
    stream.add_argument("--duration", type=float, default=10.0, help="seconds per run (10)")
    stream.add_argument("--warmup", type=float, default=2.0, help="seconds (2)")
    stream.add_argument("--runs", type=positive_int, default=3, help="runs per target (3)")
    stream.add_argument("--workers", type=positive_int, default=2, help="gateway workers (2)")
    stream.add_argument("--database", choices=DATABASES, default="sqlite")
    stream.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    stream.set_defaults(func=_run_stream)
    signals = kinds.add_parser(
        "signals",
        help="signal pipeline vs its lstsq reference loop; a 1.2 GB panel's time and memory",
        description=(
            "Z-score, residual orthogonalization and composite on a (252, 60, 6) panel, "
            "production and reference loop taking turns in one run (P50/P95/P99, ratio); "
            "symmetric and sequential for information; then the (2520, 3000, 20) panel's "
            "wall time and peak memory beyond its input."
        ),
    )
    add_signals_arguments(signals)
    signals.set_defaults(func=_run_signals)
    live = kinds.add_parser(
        "live-signals",
        help="one new timestamp for N symbols: ticks in Redis to the signal cycle published",
        description=(
            "Start a private Redis, `ordergate worker` and a floor of the same Redis hops; "
            "send one tick per symbol per timestamp at a constant rate to both; print "
            "P50/P95/P99 of tick to published signal for each."
        ),
    )
    live.add_argument("--symbols", type=positive_int, default=500, help="(500)")
    live.add_argument("--rate", type=float, default=4.0, help="timestamps a second (4)")
    live.add_argument("--duration", type=float, default=30.0, help="seconds (30)")
    live.add_argument("--history", type=positive_int, default=62, help="timestamps first (62)")
    live.add_argument("--json", type=Path, default=None, help="also write the results here")
    live.set_defaults(func=_run_live_signals)
    strategy = kinds.add_parser(
        "strategy",
        help="tick -> signal -> order -> fill on the stream, vs the order path alone",
        description=(
            "Start a private Redis and the gateway with the simulated feed and the strategy "
            "on; time each strategy order from its cycle's first tick to its ack and to its "
            "fill on the WebSocket stream, and a POSTed order at the same pace, against the "
            "200 ms SLA."
        ),
    )
    strategy.add_argument("--duration", type=float, default=60.0, help="seconds (60)")
    strategy.add_argument(
        "--rounds-per-s", type=float, default=4.0, help="feed rounds a second (4)"
    )
    strategy.add_argument("--interval", type=float, default=1.0, help="rebalance every (1 s)")
    strategy.add_argument("--json", type=Path, default=None, help="also write the results here")
    strategy.set_defaults(func=_run_strategy)
    knee = kinds.add_parser(
        "knee",
        help="the highest constant order rate answered within the SLA (open loop, rising)",
        description=(
            "Start a private Redis and the gateway; open-loop phases at rising rates until "
            "one misses P95 <= --sla-ms, has errors, or cannot be offered; print each and "
            "the knee."
        ),
    )
    knee.add_argument(
        "--rates",
        type=_rates,
        default=[500.0, 1000.0, 1500.0, 2000.0, 2500.0, 3000.0, 3500.0, 4000.0],
        help="rates to try, rising (500,1000,...,4000)",
    )
    knee.add_argument("--duration", type=float, default=10.0, help="seconds per rate (10)")
    knee.add_argument("--warmup", type=float, default=2.0, help="warm-up per rate (2)")
    knee.add_argument("--workers", type=positive_int, default=2, help="gateway workers (2)")
    knee.add_argument("--sla-ms", type=float, default=200.0, help="P95 to hold (200)")
    knee.add_argument("--target", type=float, default=2000.0, help="knee to reach (2000)")
    knee.add_argument("--database", choices=DATABASES, default="sqlite")
    knee.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    knee.add_argument(
        "--gateway-env", action="append", default=[], help="KEY=VALUE for the gateway"
    )
    knee.add_argument("--json", type=Path, default=None, help="also write the results here")
    knee.set_defaults(func=_run_knee)
    metrics = kinds.add_parser(
        "metrics",
        help="the instrumentation's cost per order (metrics, timer, log context) vs nothing",
        description=(
            "In process, batches of 1000 orders' worth of exactly what the order path "
            "records, interleaved with an empty loop, in multiprocess and single-process "
            "mode; per-order P50/P95/P99 against 50 us."
        ),
    )
    metrics.add_argument("--batches", type=positive_int, default=200, help="(200)")
    metrics.add_argument("--json", type=Path, default=None, help="also write the results here")
    metrics.set_defaults(func=_run_metrics)
    guard = kinds.add_parser(
        "guard",
        help="the broker guard (breaker + pacing) vs a plain Redis round trip: P50/P95/P99",
        description=(
            "In process, against REDIS_URL or a private Redis: BrokerGuard.admit and "
            "succeeded, and a plain GET through the same client, interleaved at a constant "
            "arrival rate; the guard's P95 over the floor's against 0.3 ms."
        ),
    )
    guard.add_argument("--rate", type=float, default=500.0, help="calls/s (500)")
    guard.add_argument("--seconds", type=float, default=10.0, help="seconds of each (10)")
    guard.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up (1)")
    guard.set_defaults(func=_run_guard)
    scaling = kinds.add_parser(
        "scaling",
        help="order path P50/P95 and memory vs resting orders, accounts and subscribers",
        description=(
            "For each accounts level, one gateway: resting orders added cumulatively, an "
            "open-loop phase at each level, subscribers at the last; P95 against the "
            "level's empty point, gateway RSS and Redis used_memory at each."
        ),
    )
    scaling.add_argument("--rate", type=float, default=500.0, help="orders/s (500)")
    scaling.add_argument("--seconds", type=float, default=3.0, help="seconds a point (3)")
    scaling.add_argument(
        "--accounts", type=_counts, default=(1, 100, 1000), help="levels (1,100,1000)"
    )
    scaling.add_argument(
        "--resting", type=_counts, default=(0, 1000, 10000), help="levels (0,1000,10000)"
    )
    scaling.add_argument(
        "--subscribers", type=int, default=100, help="at the last point (100; 0: none)"
    )
    scaling.add_argument("--out", type=Path, default=Path("bench-results"), help="(bench-results)")
    scaling.set_defaults(func=_run_scaling)
    suite = kinds.add_parser(
        "suite",
        help="every stage's benchmark, shortened, in one run: a table, JSON and PNGs",
        description=(
            "The order path on SQLite and PostgreSQL, the risk decision, the broker guard, "
            "the WebSocket fan-out, the signals, the live signal cycle and the scaling run, "
            "each against its floor and targets; results in --out; exit 1 if a stage fails."
        ),
    )
    suite.add_argument("--stages", type=_stages, default=None, help="comma-separated (all of them)")
    suite.add_argument("--out", type=Path, default=Path("bench-results"), help="(bench-results)")
    suite.add_argument(
        "--postgres-url",
        default=DEFAULT_POSTGRES_URL,
        help="where the PostgreSQL stage makes its throwaway database",
    )
    suite.set_defaults(func=_run_suite)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


def _run_knee(args: argparse.Namespace) -> int:
    from bench.knee import command

    return command(args)


def _run_guard(args: argparse.Namespace) -> int:
    from bench.guard import command

    return command(args)


def _run_metrics(args: argparse.Namespace) -> int:
    from bench.metrics_overhead import run

    return run(args.batches, args.json)


def _run_scaling(args: argparse.Namespace) -> int:
    from bench.scaling import command

    return command(args)


def _run_suite(args: argparse.Namespace) -> int:
    from bench.suite import STAGES, command

    if args.stages is None:
        args.stages = STAGES
    return command(args)


def _stages(text: str) -> tuple[str, ...]:
    from bench.suite import STAGES

    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [name for name in names if name not in STAGES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"stages are some of {', '.join(STAGES)}: {text!r}")
    return names


def _counts(text: str) -> tuple[int, ...]:
    """``0,1000`` -> (0, 1000): whole numbers, none negative, at least one."""
    return _whole_numbers(text, 0, "counts must not be negative")


def _run_mass_cancel(args: argparse.Namespace) -> int:
    from bench.mass_cancel import command

    return command(args)


def _run_live_signals(args: argparse.Namespace) -> int:
    from bench.live_signals import command

    return command(args)


def _run_strategy(args: argparse.Namespace) -> int:
    from bench.strategy_loop import command

    return command(args)


def _run_stream(args: argparse.Namespace) -> int:
    from bench.stream import command

    return command(args)


def _run_signals(args: argparse.Namespace) -> int:
    from bench.signals import command

    return command(args)


def _run_batching(args: argparse.Namespace) -> int:
    from bench.batching import command

    return command(args)


def _rates(text: str) -> list[float]:
    """``500,2000`` -> [500.0, 2000.0]: positive, at least one."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of rates: {text!r}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"rates must be positive: {text!r}")
    return values


def concurrencies(text: str) -> tuple[int, ...]:
    """``32,128`` -> (32, 128): positive, at least one."""
    return _whole_numbers(text, 1, "concurrencies must be positive")


def _whole_numbers(text: str, least: int, complaint: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}"
        ) from None
    if not values or min(values) < least:
        raise argparse.ArgumentTypeError(f"{complaint}: {text!r}")
    return values


def positive_int(text: str) -> int:
    """``4`` -> 4: a whole number, at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def add_orders_arguments(parser: argparse.ArgumentParser, *, one_rate: bool = True) -> None:
    """The options of ``bench orders`` (shared with ``python -m bench.orders`` and, but for
    the one ``--rate``, ``bench batching``)."""
    if one_rate:
        parser.add_argument(
            "--rate", type=float, default=500.0, help="open-loop arrival rate, requests/s (500)"
        )
    parser.add_argument(
        "--duration", type=float, default=20.0, help="seconds of each open-loop phase (20)"
    )
    parser.add_argument(
        "--max-duration",
        type=float,
        default=12.0,
        help="seconds of each target's closed loop at each concurrency, over all rounds (12)",
    )
    parser.add_argument(
        "--connections",
        type=concurrencies,
        default=(32, 128),
        help="closed-loop concurrencies, comma-separated; a target's maximum throughput is its "
        "best closed loop (32,128)",
    )
    parser.add_argument(
        "--rounds",
        type=positive_int,
        default=4,
        help="closed-loop rounds: each target's --max-duration at a concurrency is run as this "
        "many slices, the targets taking turns (4: floor, gateway, gateway, floor, ...)",
    )
    parser.add_argument(
        "--warmup", type=float, default=3.0, help="seconds of warm-up per target at --rate (3)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="gateway uvicorn workers (targets are for 1)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument(
        "--idle-subscribers",
        type=int,
        default=0,
        help="WebSocket subscribers kept connected to another, quiet account meanwhile (0)",
    )
    parser.add_argument(
        "--logs", type=Path, default=None, help="keep the servers' logs in this directory"
    )
    parser.add_argument(
        "--database",
        choices=DATABASES,
        default="sqlite",
        help="the gateway's order log: a SQLite file (the default) or a throwaway PostgreSQL "
        "database, created for the run and dropped after it",
    )
    parser.add_argument(
        "--postgres-url",
        default=DEFAULT_POSTGRES_URL,
        help="the PostgreSQL server --database postgresql creates its database on "
        "(ORDERGATE_BENCH_POSTGRES_URL, else the local server)",
    )
    parser.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the gateway's processes (repeatable)",
    )


def add_signals_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``bench signals``."""
    parser.add_argument(
        "--runs", type=positive_int, default=200, help="production calls, small panel (200)"
    )
    parser.add_argument(
        "--reference-runs", type=positive_int, default=7, help="reference loop calls (7)"
    )
    parser.add_argument(
        "--method-runs", type=positive_int, default=50, help="symmetric and sequential, each (50)"
    )
    parser.add_argument(
        "--large",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also the (2520, 3000, 20) panel, 1.2 GB (on)",
    )
    parser.add_argument(
        "--large-runs", type=positive_int, default=3, help="calls on the large panel (3)"
    )
    parser.add_argument(
        "--rss-check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="cross-check the large panel's peak memory by RSS in a child process (on)",
    )
    parser.add_argument("--seed", type=int, default=1, help="the panels' random seed (1)")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")


def add_risk_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``bench risk``. The default rate is the order path's target rate
    for one worker: what one process decides at the SLA's load."""
    parser.add_argument("--rate", type=float, default=500.0, help="decisions/s (500)")
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="seconds of each open-loop phase (10)"
    )
    parser.add_argument("--accounts", type=int, default=20, help="accounts decided for (20)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up each (1)")
    parser.add_argument(
        "--closed-seconds",
        type=float,
        default=2.0,
        help="seconds of each closed-loop (max throughput) phase; 0 skips it (2)",
    )
    parser.add_argument("--concurrency", type=int, default=16, help="closed-loop concurrency (16)")


def _run_risk(args: argparse.Namespace) -> int:
    from bench.risk import command

    return command(args)


def _run_orders(args: argparse.Namespace) -> int:
    from bench.orders import command

    return command(args)
