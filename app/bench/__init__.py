"""Benchmarks, as ``ordergate bench <name>`` subcommands.

Only argument parsing lives here; each benchmark module is imported when it runs, so the CLI's
other commands (``serve`` above all) never pay for numpy or the load generator.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bench`` and its subcommands to the ``ordergate`` CLI."""
    bench = subparsers.add_parser("bench", help="run a benchmark and print its numbers")
    kinds = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)
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


def add_orders_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``bench orders`` (shared with ``python -m app.bench.orders``)."""
    parser.add_argument(
        "--rate", type=float, default=500.0, help="open-loop arrival rate, requests/s (500)"
    )
    parser.add_argument(
        "--duration", type=float, default=20.0, help="seconds of each open-loop phase (20)"
    )
    parser.add_argument(
        "--max-duration", type=float, default=10.0, help="seconds of each closed-loop phase (10)"
    )
    parser.add_argument("--connections", type=int, default=32, help="closed-loop concurrency (32)")
    parser.add_argument(
        "--warmup", type=float, default=3.0, help="seconds of warm-up per target at --rate (3)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="gateway uvicorn workers (targets are for 1)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument(
        "--logs", type=Path, default=None, help="keep the servers' logs in this directory"
    )
    parser.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the gateway's processes (repeatable)",
    )


def _run_orders(args: argparse.Namespace) -> int:
    from app.bench.orders import command

    return command(args)
