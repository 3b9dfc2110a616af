"""The execution stream's floor: the least an HTTP-to-Redis-Streams-to-WebSocket fan-out
can do, measured beside the gateway's stream.

``POST /v1/orders`` appends three report-sized entries (an order's pending_new, new and
fill, as the gateway commits them) to one Redis stream in one round trip and answers 201.
Each worker reads the stream with a blocking ``XREAD`` and sends every entry to each of its
WebSocket subscribers in turn (``/v1/stream``: accepted, one subscribe frame awaited, then
fed). No authentication, order log, numbering or per-subscriber queue. Served by uvicorn
with the gateway's options.

Run: ``REDIS_URL=redis://... python -m bench.stream_floor --port 8098 --workers 2``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from app.domain.views import render_time
from app.redisio.multiplexed import MultiplexedRedis

STREAM_KEY = "bench:floor:exec"
EVENTS = ("pending_new", "new", "fill")
# About the size of the gateway's report (its order document and report fields).
PADDING = "x" * 560


def floor_command(port: int, workers: int) -> list[str]:
    return [
        sys.executable, "-m", "bench.stream_floor", "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip


def create_app() -> Starlette:
    redis_url = os.environ["REDIS_URL"]
    sockets: set[WebSocket] = set()

    async def fan_out(reader: MultiplexedRedis) -> None:
        last = "$"
        while True:
            reply = await reader.execute("XREAD", "BLOCK", 5000, "STREAMS", STREAM_KEY, last)
            for _key, entries in reply or ():
                for entry_id, fields in entries:
                    last = entry_id
                    text = fields[1].decode()
                    for ws in list(sockets):
                        with contextlib.suppress(Exception):
                            await ws.send_text(text)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.redis = MultiplexedRedis(redis_url)
        reader = MultiplexedRedis(redis_url, reply_timeout_s=10.0)
        task = asyncio.create_task(fan_out(reader))
        try:
            yield
        finally:
            task.cancel()
            await app.state.redis.close()
            await reader.close()

    async def place(request: Request) -> Response:
        intent = orjson.loads(await request.body())
        now = render_time(datetime.now(UTC))
        commands = []
        for event in EVENTS:
            report = {
                "type": "execution",
                "exec_id": secrets.token_hex(8),
                "event": event,
                "order": {"client_order_id": intent["client_order_id"], "padding": PADDING},
                "ts": now,
            }
            commands.append(
                ("XADD", STREAM_KEY, "MAXLEN", "~", 10000, "*", "r", orjson.dumps(report))
            )
        await request.app.state.redis.execute_many(commands)
        return JSONResponse({"client_order_id": intent["client_order_id"]}, status_code=201)

    async def stream(ws: WebSocket) -> None:
        await ws.accept()
        try:
            await ws.receive_text()  # the subscribe frame
            sockets.add(ws)
            while True:
                await ws.receive_text()
        except WebSocketDisconnect:
            pass
        finally:
            sockets.discard(ws)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/v1/orders", place, methods=["POST"]),
            Route("/healthz", healthz),
            WebSocketRoute("/v1/stream", stream),
        ],
        lifespan=lifespan,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stream_floor", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8098)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    uvicorn.run(
        "bench.stream_floor:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        ws="app.http.server:GatewayWebSocketProtocol",
        ws_per_message_deflate=False,
    )


if __name__ == "__main__":
    main()
