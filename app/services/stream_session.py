"""One subscriber's execution stream: every report of its accounts, once, in order.

The hub hands a session whatever the Redis streams hold; the session holds each account to
its numbering. For each account it knows the last report it sent, and a report numbered
further on is sent only after the ones between, read from the stream or, where the stream
no longer has them (trimmed, flushed, never published), from the order log. Resuming with
``since`` is the same move: the session subscribes first, then sends everything after
``since`` up to what the log holds now, and drops what the hub then delivers twice. So
nothing is missed at the seam, and nothing sent twice.

The session writes to its connection from one task (``run``), fed by one bounded queue:
the hub's entries, and the answers to the subscriber's own requests. Every frame is a JSON
array of messages (as Alpaca's streams send them): one when the subscriber keeps up, all
that waited (up to ``MESSAGES_PER_FRAME``) when it fell behind, so a busy moment costs a
frame, not a frame per report, at both ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

import orjson
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError

from app.domain.errors import (
    Forbidden,
    GatewayError,
    NotAuthenticated,
    RequestInvalid,
    StorageUnavailable,
)
from app.domain.views import order_document, problem_body, render_execution
from app.services.auth import ApiKeyService, Principal, Role
from app.services.stream_hub import Broadcast, Report, StreamHub, Subscription, report_of
from app.storage.redis.execution_stream import ExecutionStreamStore
from app.storage.sql.execution_log import ExecutionLog

log = logging.getLogger(__name__)

# Reports read at once when catching up or filling a gap: one batch is read and rendered
# on the event loop in one go (a few ms), so batches are small and taken one at a time
# per process (``ExecutionFeed.history_turn``), and the loop is given back between them.
HISTORY_BATCH = 200
# Messages sent in one frame at most (a few hundred KB of reports).
MESSAGES_PER_FRAME = 256
# How often an idle session is woken to see whether a heartbeat or a key check is due: one
# task wakes them all, where a timer per session per frame cost more than the sending.
TICK_S = 0.5
TICK = object()


class Channel(StrEnum):
    EXECUTIONS = "executions"  # every execution report, whole
    ORDERS = "orders"  # the order as each report leaves it
    MARKETDATA = "marketdata"  # each processed batch of ticks and the bars it completed
    SIGNALS = "signals"  # each signal cycle's composite per symbol


BROADCAST_CHANNELS = frozenset({Channel.MARKETDATA, Channel.SIGNALS})


@dataclass(frozen=True, slots=True)
class SubscribeRequest:
    channels: frozenset[Channel]
    accounts: frozenset[str] | None  # None: every account (an admin's)
    since: dict[str, int]  # resume after these, per account


def subscription_for(
    principal: Principal,
    channels: Iterable[Channel],
    accounts: list[str] | None,
    since: int | dict[str, int] | None,
) -> SubscribeRequest:
    """What a subscriber may have: its own account, or any (or all) for an admin key."""
    if principal.role is Role.ADMIN:
        wanted = None if accounts is None else frozenset(accounts)
    else:
        wanted = frozenset(accounts or [principal.account])
        if wanted != {principal.account}:
            raise Forbidden(f"this key may subscribe to account {principal.account} only")
    if isinstance(since, int):
        if wanted is None or len(wanted) != 1:
            raise RequestInvalid("with several accounts, since names each: {account: seq}")
        since = {next(iter(wanted)): since}
    since = since or {}
    if wanted is not None and not set(since) <= wanted:
        raise RequestInvalid("since names an account not subscribed to")
    if any(seq < 0 for seq in since.values()):
        raise RequestInvalid("since is a report number, 0 or more")
    return SubscribeRequest(frozenset(channels), wanted, dict(since))


class SessionEnd(StrEnum):
    REVOKED = "revoked"  # the key no longer authenticates
    UNAVAILABLE = "unavailable"  # the order log or Redis failed under a catch-up


class _KeyRevoked(Exception):
    pass


# What a session cannot serve through: it ends, and the subscriber resumes later.
UNAVAILABLE = (DBAPIError, RedisError, OSError, TimeoutError, StorageUnavailable)


Send = Callable[[str], Awaitable[None]]


class ExecutionFeed:
    """The execution reports' history and live stream, as subscribers are served them."""

    def __init__(
        self,
        *,
        hub: StreamHub,
        store: ExecutionStreamStore,
        executions: ExecutionLog,
        keys: ApiKeyService,
        queue_size: int,
        heartbeat_s: float,
        key_check_s: float,
    ) -> None:
        self.hub = hub
        self._store = store
        self._log = executions
        self.keys = keys
        self._queue_size = queue_size
        self.heartbeat_s = heartbeat_s
        self.key_check_s = key_check_s
        self._sessions: set[StreamSession] = set()
        self._ticker: asyncio.Task[None] | None = None
        self.history_turn = asyncio.Lock()  # one batch of history read at a time

    def start(self) -> None:
        self._ticker = asyncio.create_task(self._tick(), name="stream-ticker")

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
            self._ticker = None

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            for session in list(self._sessions):
                if session.queue.empty():  # a busy one looks at the clock anyway
                    session.request(TICK)

    async def history(
        self, principal: Principal, account: str | None, since: int, limit: int
    ) -> list[str]:
        """``GET /v1/executions``: an account's reports after ``since``, as JSON."""
        account = account or principal.account
        if account != principal.account and principal.role is not Role.ADMIN:
            raise Forbidden(f"this key may read account {principal.account} only")
        return [render_execution(e) for e in await self._log.after(account, since, limit)]

    def session(self, key: str, send: Send) -> StreamSession:
        session = StreamSession(self, key, send, asyncio.Queue(self._queue_size))
        self._sessions.add(session)
        return session

    def forget(self, session: StreamSession) -> None:
        self._sessions.discard(session)

    async def newest(self, accounts: Iterable[str]) -> dict[str, int]:
        return await self._log.newest(accounts)

    async def reports_after(self, account: str, after: int, upto: int | None) -> list[Report]:
        """The account's reports after ``after`` (up to ``upto``), as many as are at hand
        (call again for more): from the stream while it holds them in order, else from the
        order log."""
        want = HISTORY_BATCH if upto is None else min(HISTORY_BATCH, upto - after)
        if want <= 0:
            return []
        try:
            entries = await self._store.after(account, after, want)
        except (RedisError, OSError, TimeoutError):
            entries = []
        run: list[Report] = []
        for entry in entries:
            if entry.seq != after + len(run) + 1:
                break
            run.append(report_of(entry.execution))
        if run:
            return run
        return [report_of(e) for e in await self._log.after(account, after, want)]


class StreamSession:
    def __init__(
        self, feed: ExecutionFeed, key: str, send: Send, queue: asyncio.Queue[object]
    ) -> None:
        self._feed = feed
        self._key = key
        self._write = send
        self._outbox: list[str] = []  # messages for the next frame
        self.queue = queue
        self.subscription: Subscription | None = None
        self.overflowed = asyncio.Event()  # the queue was full: the session must end
        self._channels: frozenset[Channel] = frozenset()
        self.last: dict[str, int] = {}  # per account, the last report sent
        self._next_heartbeat = self._next_key_check = time.monotonic()

    # -- from the connection's reader ------------------------------------------------------
    def request(self, item: SubscribeRequest | GatewayError | str | object) -> None:
        """Queue a request, an error to answer, or a frame to send. A full queue (the
        subscriber sends faster than it reads) overflows the session."""
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed.set()

    def close(self) -> None:
        self._feed.forget(self)
        if self.subscription is not None:
            self._feed.hub.unsubscribe(self.subscription)

    # -- the one writer --------------------------------------------------------------------
    async def run(self) -> SessionEnd:
        """Send until the key is revoked or a catch-up cannot be served (the caller ends it
        otherwise)."""
        now = time.monotonic()
        self._next_heartbeat = now + self._feed.heartbeat_s
        self._next_key_check = now + self._feed.key_check_s
        try:
            while True:
                await self._due_checks()
                try:
                    item = self.queue.get_nowait()  # no timer per frame while busy
                except asyncio.QueueEmpty:
                    await self._flush()  # nothing more waiting: send what is gathered
                    item = await self.queue.get()  # a report, a request, or a tick
                if item is TICK:
                    continue
                if isinstance(item, Report):
                    await self._deliver(item)
                elif isinstance(item, Broadcast):
                    await self._send(item.text)
                elif isinstance(item, SubscribeRequest):
                    await self._subscribe(item)
                elif isinstance(item, GatewayError):
                    await self._send(_error_frame(item))
                else:
                    assert isinstance(item, str)
                    await self._send(item)
        except _KeyRevoked:
            return SessionEnd.REVOKED
        except UNAVAILABLE as exc:
            log.warning("a subscriber's catch-up failed (%r): closed, to resume later", exc)
            return SessionEnd.UNAVAILABLE

    async def _due_checks(self) -> None:
        """The key check and the heartbeat, when due; also between batches of a catch-up,
        so a long one neither outlives its key nor silences the heartbeat."""
        now = time.monotonic()
        if now >= self._next_key_check:
            self._next_key_check = now + self._feed.key_check_s
            try:
                await self._feed.keys.authenticate(self._key)
            except NotAuthenticated:
                raise _KeyRevoked from None
            except UNAVAILABLE as exc:  # the key was good; asked again next time
                log.info("API key check deferred: %r", exc)
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self._feed.heartbeat_s
            await self._heartbeat()

    async def _send(self, message: str) -> None:
        self._outbox.append(message)
        if len(self._outbox) >= MESSAGES_PER_FRAME:
            await self._flush()

    async def _flush(self) -> None:
        if self._outbox:
            frame = "[" + ",".join(self._outbox) + "]"
            self._outbox.clear()
            await self._write(frame)
            await asyncio.sleep(0)  # a long catch-up gives the loop back between frames

    async def _subscribe(self, request: SubscribeRequest) -> None:
        if self.subscription is not None:
            await self._send(_error_frame(RequestInvalid("already subscribed")))
            return
        self._channels = request.channels
        self.subscription = Subscription(
            request.accounts,
            self.queue,
            self.overflowed,
            frozenset(c.value for c in request.channels & BROADCAST_CHANNELS),
        )
        # Delivers from now on; the accounts covered now, each one's newest report.
        newest = await self._feed.hub.subscribe(self.subscription)
        for account in set(request.since) - set(newest):  # named, none yet
            newest[account] = 0
        resync: list[dict[str, object]] = []
        for account in newest:
            since = request.since.get(account)
            if since is not None and since > newest[account]:
                # Not a number this gateway gave: the subscriber's history is not ours.
                resync.append({"account": account, "since": since, "newest": newest[account]})
                since = None
            self.last[account] = newest[account] if since is None else since
        await self._send(
            orjson.dumps(
                {
                    "type": "subscribed",
                    "channels": sorted(self._channels),
                    "accounts": "*" if request.accounts is None else sorted(request.accounts),
                    "seq": newest,
                }
            ).decode()
        )
        for notice in resync:
            await self._send(orjson.dumps({"type": "resync_required", **notice}).decode())
        for account in newest:
            # Up to what the log holds: a stream can hold more only if it is stale (the
            # database was replaced under it); what is committed from now on, the hub brings.
            await self._send_after(account, upto=newest[account])

    async def _deliver(self, report: Report) -> None:
        last = self.last.get(report.account)
        if last is None:  # a new account of all: all its reports are new
            last = self.last[report.account] = 0
        if report.seq <= last:
            return  # sent already (caught up, or filled in)
        if report.seq > last + 1:
            await self._send_after(report.account, upto=report.seq - 1)
        if report.seq == self.last[report.account] + 1:
            await self._send_report(report)

    async def _send_after(self, account: str, upto: int | None) -> None:
        """Send the account's reports after the last one sent, up to ``upto`` (None: all
        there are)."""
        while True:
            await self._due_checks()
            async with self._feed.history_turn:
                batch = await self._feed.reports_after(account, self.last[account], upto)
            if not batch:
                return
            for report in batch:
                await self._send_report(report)

    async def _send_report(self, report: Report) -> None:
        self.last[report.account] = report.seq
        if Channel.EXECUTIONS in self._channels:
            await self._send(report.text)
        if Channel.ORDERS in self._channels:
            frame = {
                "type": "order",
                "account": report.account,
                "seq": report.seq,
                "event": report.execution.event.value,
                "order": order_document(report.execution.order),
            }
            await self._send(orjson.dumps(frame).decode())

    async def _heartbeat(self) -> None:
        """The newest report number of each account, so a quiet stream can be told from a
        dead one; one the subscriber lacks (its publish was lost) is sent now."""
        if self.subscription is None:
            await self._send('{"type":"heartbeat"}')
            return
        try:
            newest = await self._feed.newest(list(self.last))
        except UNAVAILABLE as exc:  # a quiet heartbeat, until the log answers again
            log.info("heartbeat without the newest numbers: %r", exc)
            await self._send('{"type":"heartbeat"}')
            return
        await self._send(orjson.dumps({"type": "heartbeat", "seq": newest}).decode())
        if self.queue.empty():
            for account, seq in newest.items():
                if seq > self.last[account]:
                    await self._send_after(account, upto=seq)


def _error_frame(error: GatewayError) -> str:
    body = problem_body(error)
    return orjson.dumps({"type": "error", "code": body["code"], "detail": body["detail"]}).decode()
