"""WebSocket ``/v1/stream``: the connection's protocol around a ``StreamSession``.

- Origin: a browser's ``Origin`` must be allowed (``stream.allowed_origins``), else the
  handshake is refused (403). A client that sends none is not a browser and not checked.
- Authentication: ``Authorization: Bearer <key>`` on the handshake, or a first message
  ``{"op": "auth", "key": ...}`` within ``stream.auth_timeout_s``; otherwise close 1008
  before any data.
- Frames from the server are JSON arrays of messages (see ``stream_session``).
- Requests: ``subscribe``, ``ping``. A frame that is not a JSON object with a known ``op``
  gets an error frame and changes nothing; a binary frame closes 1003; a frame over
  ``stream.max_frame_bytes`` closes 1009 (uvicorn's limit).
- Ends: the peer leaves; 1013 when the subscriber fell too far behind (resume after the
  last seq it has); 1008 when its key is revoked; 1001 when the server shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any, Literal

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from app.domain.accounts import check_account_name
from app.domain.errors import GatewayError, NotAuthenticated, RequestInvalid
from app.domain.executions import MAX_SEQ
from app.services.auth import Principal
from app.services.metrics import STREAM_SLOW_CONSUMERS, STREAM_SUBSCRIBERS
from app.services.stream_session import (
    UNAVAILABLE,
    Channel,
    ExecutionFeed,
    SessionEnd,
    StreamSession,
    subscription_for,
)

POLICY_VIOLATION = 1008
UNSUPPORTED_DATA = 1003
TRY_AGAIN_LATER = 1013


Seq = Annotated[int, Field(ge=0, le=MAX_SEQ)]
AccountName = Annotated[str, AfterValidator(check_account_name)]
# Accounts one subscription may name (an admin's; leave them out for every account).
MAX_ACCOUNTS = 1000


class SubscribeOp(BaseModel):
    model_config = ConfigDict(extra="forbid")

    op: Literal["subscribe"]
    channels: list[Channel] = Field(min_length=1)
    accounts: list[AccountName] | None = Field(None, min_length=1, max_length=MAX_ACCOUNTS)
    since: Seq | dict[AccountName, Seq] | None = None


class _Closed(Exception):
    def __init__(self, code: int, reason: str) -> None:
        self.code, self.reason = code, reason


async def serve_stream(
    websocket: WebSocket, feed: ExecutionFeed, allowed_origins: list[str], auth_timeout_s: float
) -> None:
    origin = websocket.headers.get("origin")
    if origin is not None and origin not in allowed_origins:
        await websocket.close(POLICY_VIOLATION, "origin not allowed")  # refuses the handshake
        return
    await websocket.accept()
    try:
        key, principal = await _authenticate(websocket, feed, auth_timeout_s)
        await _send_json(
            websocket,
            {"type": "authenticated", "account": principal.account, "role": principal.role},
        )
        await _serve(websocket, feed.session(key, websocket.send_text), principal)
    except _Closed as closed:
        with contextlib.suppress(RuntimeError, OSError):
            await websocket.close(closed.code, closed.reason)
    except WebSocketDisconnect:
        pass


async def _authenticate(
    websocket: WebSocket, feed: ExecutionFeed, auth_timeout_s: float
) -> tuple[str, Principal]:
    scheme, _, key = (websocket.headers.get("authorization") or "").partition(" ")
    if not key or scheme.lower() != "bearer":
        try:
            async with asyncio.timeout(auth_timeout_s):
                request = _parse(await _receive_text(websocket))
        except TimeoutError:
            raise _Closed(POLICY_VIOLATION, "not authenticated in time") from None
        except RequestInvalid as exc:
            raise _Closed(POLICY_VIOLATION, exc.detail[:120]) from None
        sent = request.get("key") if request.get("op") == "auth" else None
        if not isinstance(sent, str):
            raise _Closed(POLICY_VIOLATION, 'authenticate first: {"op": "auth", "key": ...}')
        key = sent
    try:
        return key, await feed.keys.authenticate(key)
    except NotAuthenticated:
        raise _Closed(POLICY_VIOLATION, "unknown or revoked API key") from None
    except UNAVAILABLE:  # the key store (the database) did not answer
        raise _Closed(TRY_AGAIN_LATER, "keys cannot be checked now; try again") from None


async def _serve(websocket: WebSocket, session: StreamSession, principal: Principal) -> None:
    sender = asyncio.create_task(session.run(), name="stream-sender")
    reader = asyncio.create_task(_read(websocket, session, principal), name="stream-reader")
    overflow = asyncio.create_task(session.overflowed.wait(), name="stream-overflow")
    STREAM_SUBSCRIBERS.inc()
    try:
        done, _ = await asyncio.wait({sender, reader, overflow}, return_when="FIRST_COMPLETED")
    finally:
        STREAM_SUBSCRIBERS.dec()
        for task in (sender, reader, overflow):
            task.cancel()
        await asyncio.gather(sender, reader, overflow, return_exceptions=True)
        session.close()
    if overflow in done:
        STREAM_SLOW_CONSUMERS.inc()
        raise _Closed(TRY_AGAIN_LATER, "too far behind; resume after the last seq you received")
    if sender in done:
        end = sender.result()  # a failure raises here
        if end is SessionEnd.REVOKED:
            raise _Closed(POLICY_VIOLATION, "the API key was revoked")
        if end is SessionEnd.UNAVAILABLE:
            raise _Closed(TRY_AGAIN_LATER, "the order log is unavailable; resume later")
    reader.result()  # the peer left, or sent a frame that ends the connection


async def _read(websocket: WebSocket, session: StreamSession, principal: Principal) -> None:
    while True:
        try:
            request = _parse(await _receive_text(websocket))
            op = request.get("op")
            if op == "subscribe":
                wanted = SubscribeOp.model_validate(request)
                session.request(
                    subscription_for(principal, wanted.channels, wanted.accounts, wanted.since)
                )
            elif op == "ping":
                session.request('{"type":"pong"}')
            elif op == "auth":
                raise RequestInvalid("already authenticated")
            else:
                raise RequestInvalid(f"unknown op {op!r}: subscribe or ping")
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            session.request(RequestInvalid(f"subscribe: {where}: {first['msg']}"))
        except GatewayError as exc:
            session.request(exc)


async def _receive_text(websocket: WebSocket) -> str:
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    text = message.get("text")
    if text is None:
        raise _Closed(UNSUPPORTED_DATA, "binary frames are not accepted; send JSON text")
    assert isinstance(text, str)
    return text


def _parse(text: str) -> dict[str, Any]:
    try:
        request = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise RequestInvalid("a frame is one JSON object") from None
    if not isinstance(request, dict):
        raise RequestInvalid("a frame is one JSON object")
    return request


async def _send_json(websocket: WebSocket, document: dict[str, Any]) -> None:
    """One message in a frame of its own (a frame is an array of messages)."""
    if websocket.application_state is WebSocketState.CONNECTED:
        await websocket.send_text(orjson.dumps([document]).decode())
