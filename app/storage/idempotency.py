"""Idempotency records in Redis: an in-flight claim, then the answer given.

Redis answers the common case in one round trip; the database's unique
(account, client_order_id) constraint is the backstop when Redis has forgotten.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from redis.exceptions import RedisError

from app.domain.views import PROBLEM_JSON
from app.storage import keys
from app.storage.redis_mux import MultiplexedRedis
from app.storage.scripts import load_script

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer exactly as sent: status code and body (its media type follows the status)."""

    status: int
    body: str

    @property
    def media_type(self) -> str:
        # Every error the gateway gives is a problem document (RFC 9457).
        return PROBLEM_JSON if self.status >= 400 else "application/json"


@dataclass(frozen=True, slots=True)
class Claim:
    """Who holds a key: ``answer`` is set once the first request finished."""

    fingerprint: str
    answer: Answer | None


class IdempotencyStore:
    def __init__(self, redis: MultiplexedRedis, ttl_s: int, inflight_ttl_s: int) -> None:
        self._redis = redis
        self._ttl_ms = ttl_s * 1000
        self._inflight_ttl_ms = inflight_ttl_s * 1000
        self._claim = load_script(redis, "app.storage", "idempotency_claim")
        self._unsaved: list[tuple[str, str]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def claim(self, account: str, key: str, fingerprint: str) -> Claim | None:
        """None if the key is now ours; else the current holder's claim."""
        value = await self._claim(
            keys=[keys.idempotency(account, key)], args=[fingerprint, self._inflight_ttl_ms]
        )
        if value is None:
            return None
        kind, held_fingerprint, *rest = value.decode().split("|", 3)
        if kind == "P":
            return Claim(held_fingerprint, None)
        status, body = rest
        return Claim(held_fingerprint, Answer(int(status), body))

    def remember(self, account: str, key: str, fingerprint: str, answer: Answer) -> None:
        """Keep the answer given, in the background: the order log already holds it, so the
        client need not wait. Answers of concurrent orders go to Redis in one round trip."""
        self._unsaved.append(
            (keys.idempotency(account, key), f"D|{fingerprint}|{answer.status}|{answer.body}")
        )
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let the orders finishing in this loop pass join in
        while self._unsaved:
            batch, self._unsaved = self._unsaved, []
            try:
                await self._redis.execute_many(
                    [("SET", key, value, "PX", self._ttl_ms) for key, value in batch]
                )
            except RedisError as exc:
                # A retry is then answered from the order log instead.
                log.warning("could not keep %d answers in Redis: %r", len(batch), exc)

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)

    async def release(self, account: str, key: str) -> None:
        """Forget an in-flight claim whose request left no trace (so a retry may proceed)."""
        await self._redis.execute("DEL", keys.idempotency(account, key))
