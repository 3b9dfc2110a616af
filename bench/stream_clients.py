"""WebSocket subscribers for ``bench stream``, in a process of their own.

``python -m bench.stream_clients --url ws://... --key K --subscribers 100`` connects every
subscriber, subscribes, prints ``ready``, then records each ``new`` report's latency: from
its ``ts`` (the moment the gateway acknowledged the order, just before committing it) to
the frame's arrival, by the same machine's clock. On a line ``stop`` on stdin it prints
one JSON line: the latencies (ms), reports received, and close codes of subscribers the
server closed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import datetime

import orjson
import websockets


async def subscriber(
    url: str, key: str, latencies: list[float], counts: dict[str, int], ready: asyncio.Event
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
        except websockets.ConnectionClosed as closed:
            code = str(closed.rcvd.code if closed.rcvd else 1006)
            counts[f"closed {code}"] = counts.get(f"closed {code}", 0) + 1


async def run(url: str, key: str, count: int) -> None:
    latencies: list[float] = []
    counts = {"reports": 0}
    readies = [asyncio.Event() for _ in range(count)]
    tasks = [
        asyncio.create_task(subscriber(url, key, latencies, counts, ready)) for ready in readies
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
            counts["reports"] = 0
            print("reset", flush=True)
        elif line.strip() in ("stop", ""):
            break
    for task in tasks:
        task.cancel()
    print(json.dumps({"latencies_ms": latencies, **counts}), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stream_clients", description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", default="")
    parser.add_argument("--subscribers", type=int, default=100)
    args = parser.parse_args(argv)
    asyncio.run(run(args.url, args.key, args.subscribers))


if __name__ == "__main__":
    main()
