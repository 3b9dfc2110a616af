"""The floor: the least a FastAPI order endpoint can do, measured beside the real gateway.

``POST /v1/orders`` validates the same ``OrderIntent`` body and makes exactly one Redis round
trip, through the gateway's own Redis client, then answers 201. Served by uvicorn with the
gateway's own options (uvloop, httptools with a response's writes joined, one worker, no
access log), its throughput is the ceiling the gateway is compared against: the ratio says
what the gateway's risk, pacing, broker and persistence steps cost on this machine.

Run: ``python -m bench.floor --host 127.0.0.1 --port 8099 --redis-url redis://...``
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app.domain.orders import OrderIntent
from app.redisio.multiplexed import MultiplexedRedis

SEQUENCE_KEY = "bench:floor:seq"


def floor_command(host: str, port: int, redis_url: str) -> list[str]:
    """The command line that serves the floor app (for ServerProcess)."""
    return [
        sys.executable,
        "-m",
        "bench.floor",
        "--host",
        host,
        "--port",
        str(port),
        "--redis-url",
        redis_url,
    ]


def create_floor_app(redis_url: str) -> FastAPI:
    """A one-route app: validate an ``OrderIntent``, ``INCR`` one key, answer 201."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = MultiplexedRedis(redis_url)
        app.state.redis = client
        try:
            yield
        finally:
            await client.close()

    # The gateway's FastAPI settings (native OpenTelemetry off), so the two differ only in
    # what the handler does.
    app = FastAPI(
        title="ordergate floor",
        lifespan=lifespan,
        openapi_url=None,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )

    @app.post("/v1/orders", status_code=201)
    async def place(intent: OrderIntent, request: Request) -> JSONResponse:
        client: MultiplexedRedis = request.app.state.redis
        seq = await client.execute("INCR", SEQUENCE_KEY)
        body = {"id": str(seq), "client_order_id": intent.client_order_id, "status": "accepted"}
        return JSONResponse(body, status_code=201)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--redis-url", required=True)
    args = parser.parse_args(argv)
    # The gateway's serving options, so the two differ only in what the handler does.
    uvicorn.run(
        create_floor_app(args.redis_url),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        workers=1,
    )


if __name__ == "__main__":
    main()
