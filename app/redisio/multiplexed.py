"""One Redis connection that carries many commands at once (multiplexing).

redis-py leases a pooled connection per command, arms timers around it and reads its reply
before the connection serves anyone else; on the order path that was most of the client's
cost (docs/performance.md compares them). Redis answers a connection's commands in the
order they were sent, so concurrent requests can share one socket: every write appends a
waiter to a queue and every reply resolves the oldest. hiredis packs the commands and
parses the replies, in C.

A hung Redis is detected by the oldest unanswered command: when it is older than the reply
timeout, the connection is dropped, every waiter fails with ``TimeoutError`` and the next
command connects afresh. Callers therefore need no timer of their own per command.

Pub/sub and blocking reads need a connection of their own and stay on redis-py.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, cast

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Arg = str | bytes | int | float
Command = Sequence[Arg]

_MORE = object()  # hiredis: the buffer holds no complete reply yet
# A late deadline is confirmed once more after this, so that a reply already in the socket
# (the event loop was busy, not Redis) is read before the connection is given up.
_CONFIRM_S = 0.005


def _pack(command: Command) -> bytes:
    # Any: hiredis's stub types the argument as a one-element tuple.
    packed: bytes = hiredis.pack_command(cast(Any, tuple(command)))
    return packed


def _error(reply: ResponseError) -> ResponseError:
    """redis-py's exception class for an error reply (NOSCRIPT is the one callers handle)."""
    if str(reply).startswith("NOSCRIPT"):
        return NoScriptError(str(reply))
    return reply


class _Waiter:
    __slots__ = ("deadline", "expected", "future", "replies")

    def __init__(self, future: asyncio.Future[Any], deadline: float, expected: int | None) -> None:
        self.future = future
        self.deadline = deadline
        self.expected = expected  # None: one reply; n: a batch of n replies, as a list
        self.replies: list[Any] = []


class _RespProtocol(asyncio.Protocol):
    """The socket: writes commands, hands replies to waiters in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, reply_timeout_s: float) -> None:
        self._loop = loop
        self._reply_timeout_s = reply_timeout_s
        self._reader = hiredis.Reader(replyError=ResponseError, notEnoughData=_MORE)
        self._waiting: deque[_Waiter] = deque()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._suspect = False
        self._unsent: list[bytes] = []  # commands of this loop iteration, written together
        self.closed = False

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._suspect = False
        self._reader.feed(data)
        waiting = self._waiting
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as exc:
                self._give_up(RedisConnectionError(f"Redis protocol error: {exc}"))
                return
            if reply is _MORE:
                return
            if not waiting:  # a reply nobody asked for: the stream is out of step
                self._give_up(RedisConnectionError("unexpected reply from Redis"))
                return
            waiter = waiting[0]
            if waiter.expected is None:
                waiting.popleft()
                if not waiter.future.done():
                    waiter.future.set_result(reply)
                continue
            waiter.replies.append(reply)
            if len(waiter.replies) == waiter.expected:
                waiting.popleft()
                if not waiter.future.done():
                    waiter.future.set_result(waiter.replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"connection to Redis lost: {exc!r}"))

    # -- sending -------------------------------------------------------------------------
    def send(self, data: bytes, batch: int | None = None) -> asyncio.Future[Any]:
        """Write packed commands: one, whose reply the future gets, or a ``batch`` of that
        many, whose replies it gets as a list."""
        future = self._loop.create_future()
        deadline = self._loop.time() + self._reply_timeout_s
        redis_idle = not self._waiting
        self._waiting.append(_Waiter(future, deadline, batch))
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._check_deadline)
        if redis_idle and self._transport is not None and not self.closed:
            # Nothing in flight: Redis would wait for us, so write at once (what an order
            # alone at a low rate waits for).
            self._transport.write(data)
            return future
        # Else the commands sent in one loop iteration leave together once its callbacks
        # have run: one syscall here and one read for Redis instead of one each per
        # command, which pays under HTTP load; a loop doing nothing but Redis calls loses
        # its overlap with Redis instead (docs/performance.md).
        if not self._unsent:
            self._loop.call_soon(self._write_unsent)
        self._unsent.append(data)
        return future

    def _write_unsent(self) -> None:
        unsent, self._unsent = self._unsent, []
        if not self.closed and self._transport is not None:
            self._transport.write(unsent[0] if len(unsent) == 1 else b"".join(unsent))

    def close(self) -> None:
        self._fail(RedisConnectionError("connection closed by the client"))
        if self._transport is not None:
            self._transport.close()

    def _check_deadline(self) -> None:
        self._timer = None
        if not self._waiting:
            return
        now = self._loop.time()
        deadline = self._waiting[0].deadline
        if now < deadline:
            self._timer = self._loop.call_at(deadline, self._check_deadline)
        elif not self._suspect:
            self._suspect = True
            self._timer = self._loop.call_at(now + _CONFIRM_S, self._check_deadline)
        else:
            self._give_up(
                RedisTimeoutError(f"Redis did not answer within {self._reply_timeout_s:.3f}s")
            )

    def _give_up(self, error: Exception) -> None:
        self._fail(error)
        if self._transport is not None:
            self._transport.abort()

    def _fail(self, error: Exception) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiting:
            future = self._waiting.popleft().future
            if not future.done():
                future.set_exception(error)


class MultiplexedRedis:
    """Commands over one shared connection, opened on first use and after any failure."""

    def __init__(
        self, url: str, *, reply_timeout_s: float = 2.0, connect_timeout_s: float = 0.5
    ) -> None:
        self.url = url
        self._params: dict[str, Any] = dict(parse_url(url))
        self._reply_timeout_s = reply_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._protocol: _RespProtocol | None = None
        self._connecting: asyncio.Future[_RespProtocol] | None = None

    async def execute(self, *command: Arg) -> Any:
        """One command's reply; an error reply raises redis-py's ``ResponseError``."""
        protocol = self._open_protocol() or await self._connect()
        reply = await protocol.send(_pack(command))
        if isinstance(reply, ResponseError):
            raise _error(reply)
        return reply

    async def execute_many(
        self, commands: Sequence[Command], *, raise_errors: bool = True
    ) -> list[Any]:
        """Several commands in one write (a pipeline, not a transaction). With
        ``raise_errors`` False, error replies come back in the list as exceptions."""
        if not commands:
            return []
        packed = b"".join(_pack(command) for command in commands)
        protocol = self._open_protocol() or await self._connect()
        replies: list[Any] = await protocol.send(packed, batch=len(commands))
        replies = [_error(r) if isinstance(r, ResponseError) else r for r in replies]
        return _raise_first_error(replies) if raise_errors else replies

    async def transaction(self, commands: Sequence[Command]) -> list[Any]:
        """MULTI, the commands, EXEC: atomic. Written in one piece, nothing else of this
        connection comes between them. Returns EXEC's replies."""
        replies = await self.execute_many([("MULTI",), *commands, ("EXEC",)])
        return _raise_first_error(replies[-1])

    def script(self, source: str) -> LuaScript:
        return LuaScript(self, source)

    async def ping(self) -> None:
        await self.execute("PING")

    async def close(self) -> None:
        if self._protocol is not None:
            self._protocol.close()
            self._protocol = None

    # -- connecting ----------------------------------------------------------------------
    def _open_protocol(self) -> _RespProtocol | None:
        """The connection if it is usable (a plain call: no coroutine per command)."""
        protocol = self._protocol
        return None if protocol is None or protocol.closed else protocol

    async def _connect(self) -> _RespProtocol:
        # Concurrent callers share one attempt; a caller's cancellation does not cancel it.
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
            self._connecting.add_done_callback(self._connected)
        return await asyncio.shield(self._connecting)

    def _connected(self, attempt: asyncio.Future[_RespProtocol]) -> None:
        self._connecting = None
        if not attempt.cancelled() and attempt.exception() is None:
            self._protocol = attempt.result()

    async def _open(self) -> _RespProtocol:
        loop = asyncio.get_running_loop()
        params = self._params
        where = (
            params.get("path") or f"{params.get('host', 'localhost')}:{params.get('port', 6379)}"
        )

        def factory() -> _RespProtocol:
            return _RespProtocol(loop, self._reply_timeout_s)

        protocol: _RespProtocol | None = None
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                if "path" in params:
                    _, protocol = await loop.create_unix_connection(factory, params["path"])
                else:
                    tls = (
                        ssl.create_default_context()
                        if params.get("connection_class") is SSLConnection
                        else None
                    )
                    _, protocol = await loop.create_connection(
                        factory, params.get("host", "localhost"), params.get("port", 6379), ssl=tls
                    )
                await self._hello(protocol, where)
        except (OSError, TimeoutError, RedisConnectionError) as exc:
            if protocol is not None:
                protocol.close()  # a handshake that failed or hung: no half-open socket kept
            if isinstance(exc, RedisConnectionError):
                raise
            raise RedisConnectionError(f"cannot connect to Redis at {where}: {exc!r}") from exc
        return protocol

    async def _hello(self, protocol: _RespProtocol, where: str) -> None:
        """Authenticate and select the URL's database, if it names them."""
        params = self._params
        hello: list[Command] = []
        if params.get("password"):
            user = [params["username"]] if params.get("username") else []
            hello.append(("AUTH", *user, params["password"]))
        if params.get("db"):
            hello.append(("SELECT", params["db"]))
        if hello:
            packed = b"".join(_pack(c) for c in hello)
            for reply in await protocol.send(packed, batch=len(hello)):
                if isinstance(reply, ResponseError):
                    raise RedisConnectionError(f"Redis at {where} refused: {reply}")


class LuaScript:
    """A script run by EVALSHA; after a NOSCRIPT (a restarted or failed-over server) it is
    sent whole once more, so the server's script cache never goes stale."""

    def __init__(self, redis: MultiplexedRedis, source: str) -> None:
        self._redis = redis
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        try:
            return await self._redis.execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self._redis.execute("EVAL", self.source, len(keys), *keys, *args)

    async def many(self, calls: Iterable[tuple[Sequence[Arg], Sequence[Arg]]]) -> list[Any]:
        """Run the script once per (keys, args), pipelined in one round trip."""
        commands = [("EVALSHA", self.sha, len(keys), *keys, *args) for keys, args in calls]
        replies = await self._redis.execute_many(commands, raise_errors=False)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            # A NOSCRIPT reply means that call did not run: load the script, run those again.
            await self._redis.execute("SCRIPT", "LOAD", self.source)
            again = await self._redis.execute_many(
                [commands[i] for i in missing], raise_errors=False
            )
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return _raise_first_error(replies)


def _raise_first_error(replies: list[Any]) -> list[Any]:
    """``replies`` unless one is an error reply, which is raised (as redis-py's pipeline)."""
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise _error(reply)
    return replies


def pairs(flat: Sequence[bytes]) -> dict[bytes, bytes]:
    """A RESP2 HGETALL reply (field, value, field, value, ...) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))
