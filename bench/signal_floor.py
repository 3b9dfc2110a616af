"""The live signal bench's floor: the same two Redis hops as the worker (raw ticks ->
events -> signals), each a blocking read and one write, with no work between them.

``python -m bench.signal_floor REDIS_URL``; runs until terminated."""

from __future__ import annotations

import asyncio
import sys

import uvloop

from app.redisio.multiplexed import MultiplexedRedis, pairs

RAW, EVENTS, SIGNALS = "floor:raw", "floor:events", "floor:signals"


async def relay(url: str, source: str, target: str) -> None:
    """Each read of ``source`` becomes one ``target`` entry carrying the earliest
    ``received_ns`` in it, as the processor and the signal worker write theirs."""
    reader = MultiplexedRedis(url, reply_timeout_s=10.0)
    writer = MultiplexedRedis(url, reply_timeout_s=10.0)
    cursor = "$"
    while True:
        reply = await reader.execute(
            "XREAD", "COUNT", 10_000, "BLOCK", 5000, "STREAMS", source, cursor
        )
        for _key, entries in reply or ():
            cursor = entries[-1][0].decode()
            received = min(int(pairs(fields)[b"received_ns"]) for _id, fields in entries)
            await writer.execute(
                "XADD", target, "MAXLEN", "~", 10_000, "*", "received_ns", received
            )


async def main(url: str) -> None:
    await asyncio.gather(relay(url, RAW, EVENTS), relay(url, EVENTS, SIGNALS))


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1]))
