"""WebSocket subscribers for ``bench stream``, in a process of their own.

``python -m bench.stream_clients --url ws://... --key K --subscribers 100`` connects every
subscriber, subscribes, prints ``ready``, then records each ``new`` report's latency: from
its ``ts`` (the moment the gateway acknowledged the order, just before committing it) to
the frame's arrival, by the same machine's clock. On a line ``stop`` on stdin it prints
one JSON line: the latencies (ms) and their arrival times (unix seconds), reports received,
and close codes of subscribers the server closed. ``--keys-file`` (a key a line) gives
subscriber ``i`` the file's key ``i`` modulo their number, each following its own account.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path

import orjson
import websockets


async def subscriber(
    url: str,
    key: str,
    latencies: list[float],
    arrivals: list[float],
    counts: dict[str, int],
    ready: asyncio.Event,
) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
        await ws.send('{"op": "subscribe", "channels": ["executions"]}')
        ready.set()
        try:
            async for frame in ws:
                arrived = time.time()
                messages = orjson.loads(frame)
                if isinstance(messages, dict):  # the floor sends one report a frame
                    messages = [messages]
                for report in messages:
                    counts["reports"] += 1
                    if report.get("event") == "new":
                        at = datetime.fromisoformat(report["ts"]).timestamp()
                        latencies.append((arrived - at) * 1000)
                        arrivals.append(arrived)
        except websockets.ConnectionClosed as closed:
            code = str(closed.rcvd.code if closed.rcvd else 1006)
            counts[f"closed {code}"] = counts.get(f"closed {code}", 0) + 1


async def run(url: str, keys: list[str], count: int) -> None:
    latencies: list[float] = []
    arrivals: list[float] = []
    counts = {"reports": 0}
    readies = [asyncio.Event() for _ in range(count)]
    tasks = [
        asyncio.create_task(
            subscriber(url, keys[i % len(keys)], latencies, arrivals, counts, ready)
        )
        for i, ready in enumerate(readies)
    ]
    for ready in readies:
        await ready.wait()
    await asyncio.sleep(0.5)  # the subscriptions are in place at the server
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if line.strip() == "reset":  # the warm-up is over: forget it
            latencies.clear()
            arrivals.clear()
            counts["reports"] = 0
            print("reset", flush=True)
        elif line.strip() in ("stop", ""):
            break
    for task in tasks:
        task.cancel()
    document = {"latencies_ms": latencies, "arrived_s": arrivals, **counts}
    print(json.dumps(document), flush=True)


@contextlib.contextmanager
def launched(
    url: str,
    count: int,
    *,
    key: str = "",
    keys_file: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[subprocess.Popen[str]]:
    """``count`` subscribers in a process of their own, every one connected and subscribed
    when this yields; killed on the way out. Talk to it with ``reset`` and ``stop`` lines."""
    argv = [sys.executable, "-m", "bench.stream_clients", "--url", url, "--key", key]
    if keys_file is not None:
        argv += ["--keys-file", str(keys_file)]
    clients = subprocess.Popen(
        [*argv, "--subscribers", str(count)],
        env=None if env is None else dict(env),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert clients.stdout is not None
        if clients.stdout.readline().strip() != "ready":
            raise RuntimeError("the subscribers did not connect")
        yield clients
    finally:
        clients.kill()
        clients.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stream_clients", description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", default="")
    parser.add_argument("--keys-file", type=Path, default=None, help="a key a line")
    parser.add_argument("--subscribers", type=int, default=100)
    args = parser.parse_args(argv)
    keys = [args.key] if args.keys_file is None else args.keys_file.read_text().split()
    asyncio.run(run(args.url, keys, args.subscribers))


if __name__ == "__main__":
    main()
