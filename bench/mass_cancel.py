"""``python -m bench mass-cancel``: how long ``DELETE /v1/orders`` takes over N resting
orders of one account, at the paper exchange (zero latency).

Each run starts a private Redis and a gateway on a new order log, places N limit orders
far below the market (32 at a time, so they rest), waits a second, then times the mass
cancel from the client. It checks every order came back canceled. Prints each run and the
median; the target is 2,000 orders in at most 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from app.redisio.embedded import EmbeddedRedis
from bench.databases import order_log_url
from bench.orders import _environment, _progress, _start_gateway
from bench.procs import free_port

TARGET_S = 1.0
SENDERS = 32


def run_once(orders: int, database: str, postgres_url: str) -> float:
    """One run: the seconds ``DELETE /v1/orders`` took over ``orders`` resting orders."""
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="og-mass-cancel-")))
        redis = EmbeddedRedis(port=free_port()).start()
        stack.callback(redis.stop)
        database_url = stack.enter_context(order_log_url(database, postgres_url, tmp))
        env = _environment(tmp, redis.url, database_url, {})
        gateway = stack.enter_context(_start_gateway(env, tmp, _progress))
        return asyncio.run(_place_then_cancel(gateway.port, gateway.headers, orders))


async def _place_then_cancel(port: int, headers: dict[str, str], orders: int) -> float:
    limits = httpx.Limits(max_connections=SENDERS)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=120, limits=limits
    ) as client:
        senders = asyncio.Semaphore(SENDERS)

        async def rest(n: int) -> None:
            async with senders:
                body = {
                    "symbol": "MSFT",
                    "side": "buy",
                    "qty": str(n + 1),
                    "type": "limit",
                    "limit_price": "1.00",
                    "allow_duplicate": True,
                }
                answer = await client.post("/v1/orders", json=body)
                if answer.status_code != 201:
                    raise RuntimeError(f"order not placed: {answer.status_code} {answer.text}")

        await asyncio.gather(*(rest(n) for n in range(orders)))
        await asyncio.sleep(1.0)  # the applier has caught up: only the cancel is timed
        started = time.perf_counter()
        answer = await client.delete("/v1/orders")
        elapsed = time.perf_counter() - started
        canceled = [o for o in answer.json() if o["status"] == "canceled"]
        if answer.status_code != 200 or len(canceled) != orders:
            raise RuntimeError(f"{len(canceled)} of {orders} canceled: {answer.status_code}")
        return elapsed


def command(args: argparse.Namespace) -> int:
    times: list[float] = []
    for run in range(1, args.runs + 1):
        _progress(f"run {run}: {args.orders} resting orders, then DELETE /v1/orders")
        times.append(run_once(args.orders, args.database, args.postgres_url))
        print(f"run {run}: {args.orders} orders canceled in {times[-1]:.3f} s", flush=True)
    median = statistics.median(times)
    verdict = "PASS" if median <= TARGET_S else "MISS"
    print(f"median: {median:.3f} s (target <= {TARGET_S:g} s for 2,000 orders): {verdict}")
    return 0
