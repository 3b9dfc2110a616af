"""``make loadtest`` (``python -m loadtests.run``): Locust, headless, at a constant order rate
against a gateway this starts (or ``--host``, one already running), with the verdict as
the exit code.

Without ``--host`` it starts a private redis-server, a SQLite order log and ``ordergate serve
--workers 2`` with the simulated broker at zero latency, and the broker's pacing and each
key's budget far above the offered rate (the gateway is measured, not a broker's 40 orders
a second), and issues a trader key for each of ``--accounts`` accounts. With ``--host``,
the keys come from ``ORDERGATE_LOADTEST_KEYS``.

It writes Locust's CSV files and HTML report, and ``latency.png`` (each second's P50, P95
and P99 of the orders, from their send and from their intended send, and of the fills on
the stream), to ``--out`` (``loadtest-results/``).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
PLOTTED = ("POST /v1/orders", "POST /v1/orders from intended send", "fill")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.run", description=__doc__)
    parser.add_argument("--rate", type=float, default=300.0, help="orders a second (300)")
    parser.add_argument("--duration", type=int, default=60, help="seconds (60)")
    parser.add_argument("--traders", type=int, default=30, help="trader users (30)")
    parser.add_argument("--subscribers", type=int, default=2, help="stream subscribers (2)")
    parser.add_argument("--accounts", type=int, default=10, help="accounts, a key each (10)")
    parser.add_argument("--sla-ms", type=float, default=200.0, help="order P95 SLA (200)")
    parser.add_argument("--host", default=None, help="a running gateway (else one is started)")
    parser.add_argument("--out", type=Path, default=Path("loadtest-results"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if args.host is None:
            host, keys = stack.enter_context(_gateway(args.accounts))
        else:
            host, keys = args.host, os.environ.get("ORDERGATE_LOADTEST_KEYS", "")
            if not keys:
                parser.error(
                    "with --host, set ORDERGATE_LOADTEST_KEYS (trader keys, comma-separated)"
                )
        code = _run_locust(args, host, keys)
    _plot(args.out / "locust_stats_history.csv", args.out / "latency.png")
    print(f"loadtest: results in {args.out}/ (report.html, locust_*.csv, latency.png)")
    return code


@contextlib.contextmanager
def _gateway(accounts: int):  # type: ignore[no-untyped-def]
    from app.redisio.embedded import EmbeddedRedis
    from bench.orders import _environment
    from bench.procs import ServerProcess, free_port, run_command

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="og-loadtest-")))
        redis = EmbeddedRedis(port=free_port()).start()
        stack.callback(redis.stop)
        budgets = {
            f"ORDERGATE_INBOUND_LIMITS__{kind}__{field}": "1000000"
            for kind in ("CANCELS", "QUERIES")
            for field in ("RATE", "BURST")
        }
        env = _environment(tmp, redis.url, f"sqlite+aiosqlite:///{tmp / 'loadtest.db'}", budgets)
        cli = [sys.executable, "-m", "app.cli"]
        run_command([*cli, "migrate"], env)
        keys = [
            run_command([*cli, "keys", "create", "--account", f"lt{n}"], env)
            .strip()
            .splitlines()[-1]
            for n in range(accounts)
        ]
        port = free_port()
        server = ServerProcess(
            "gateway",
            [*cli, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
            env,
            tmp / "gateway.log",
        )
        with server:
            server.start(port, "/readyz")
            print(f"loadtest: gateway at 127.0.0.1:{port} (2 workers, SQLite, private Redis)")
            yield f"http://127.0.0.1:{port}", ",".join(keys)


def _run_locust(args: argparse.Namespace, host: str, keys: str) -> int:
    users = args.traders + args.subscribers
    env = {
        **os.environ,
        "ORDERGATE_LOADTEST_KEYS": keys,
        "ORDERGATE_LOADTEST_ORDERS_PER_USER": str(args.rate / args.traders),
        "ORDERGATE_LOADTEST_SUBSCRIBERS": str(args.subscribers),
        "ORDERGATE_LOADTEST_SLA_MS": str(args.sla_ms),
    }
    argv = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--host", host, "-u", str(users), "-r", str(users), "-t", f"{args.duration}s",
        "--csv", str(args.out / "locust"), "--csv-full-history",
        "--html", str(args.out / "report.html"), "--only-summary",
    ]  # fmt: skip
    return subprocess.run(argv, env=env, check=False).returncode


def _plot(history: Path, png: Path) -> None:
    """Each second's percentiles of the plotted requests over the run (Locust's rolling
    window), as a PNG."""
    if not history.exists():
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[float, float, float, float]]] = {}
    with history.open() as f:
        for row in csv.DictReader(f):
            if row["Name"] in PLOTTED and row["95%"] not in ("N/A", ""):
                series.setdefault(row["Name"], []).append(
                    (
                        float(row["Timestamp"]),
                        float(row["50%"]),
                        float(row["95%"]),
                        float(row["99%"]),
                    )
                )
    figure, axes = plt.subplots(len(PLOTTED), 1, figsize=(10, 9), sharex=True)
    for axis, name in zip(axes, PLOTTED, strict=True):
        points = series.get(name, [])
        if points:
            t0 = points[0][0]
            for column, label in ((1, "P50"), (2, "P95"), (3, "P99")):
                axis.plot([p[0] - t0 for p in points], [p[column] for p in points], label=label)
            axis.legend(loc="upper right")
        axis.set_title(name)
        axis.set_ylabel("ms")
    axes[-1].set_xlabel("seconds into the run")
    figure.tight_layout()
    figure.savefig(png, dpi=100)
    plt.close(figure)


if __name__ == "__main__":
    sys.exit(main())
