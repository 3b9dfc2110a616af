"""Idempotency records in Redis: an in-flight claim, then the answer given.

Redis answers the common case in one round trip; the database's unique
(account, client_order_id) constraint is the backstop when Redis has forgotten.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from redis.exceptions import RedisError

from app.domain.views import PROBLEM_JSON
from app.redisio.multiplexed import MultiplexedRedis
from app.storage.redis import keys
from app.storage.redis.scripts import load_script

log = logging.getLogger(__name__)


REPLAYED_HEADERS = {"Idempotent-Replayed": "true"}


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer exactly as sent: status code and body (its media type follows the status).
    ``replayed``: the answer first given to an earlier request with the same key."""

    status: int
    body: str
    replayed: bool = False
    # Headers of the first answer only, never kept (a Retry-After: a replay's moment has
    # passed).
    first_headers: Mapping[str, str] | None = None

    @property
    def media_type(self) -> str:
        # Every error the gateway gives is a problem document (RFC 9457).
        return PROBLEM_JSON if self.status >= 400 else "application/json"

    @property
    def headers(self) -> dict[str, str] | None:
        if self.replayed:
            return REPLAYED_HEADERS
        return dict(self.first_headers) if self.first_headers else None


@dataclass(frozen=True, slots=True)
class Claim:
    """Who holds a key: ``answer`` is set once the first request finished."""

    fingerprint: str
    answer: Answer | None

    @classmethod
    def parse(cls, value: bytes) -> Claim:
        kind, fingerprint, *rest = value.decode().split("|", 3)
        if kind == "P":
            return cls(fingerprint, None)
        status, body = rest
        return cls(fingerprint, Answer(int(status), body, replayed=True))


@dataclass(frozen=True, slots=True)
class KeyClaim:
    """The claim one request makes on its idempotency key, by the first Redis script it
    runs: the risk reservation, which claims it in the same atomic step (the key carries
    the account's hash tag), or ``IdempotencyStore.claim`` alone. Whether it was made is
    the caller's to keep: each says so (``ReserveOutcome.key_claimed``, or no ``KeyHeld``)."""

    key: str
    fingerprint: str
    ttl_ms: int


class KeyHeld(Exception):
    """Another request holds (or held) the idempotency key; nothing was done."""

    def __init__(self, claim: Claim) -> None:
        super().__init__(claim.fingerprint)
        self.claim = claim


class IdempotencyStore:
    def __init__(self, redis: MultiplexedRedis, ttl_s: int, inflight_ttl_s: int) -> None:
        self._redis = redis
        self._ttl_ms = ttl_s * 1000
        self._inflight_ttl_ms = inflight_ttl_s * 1000
        self._claim = load_script(
            redis, "app.storage.redis", "idempotency_claim", preludes=("idempotency_common",)
        )
        self._unsaved: list[tuple[str, str]] = []
        self._flusher: asyncio.Task[None] | None = None

    def claim_for(self, account: str, key: str, fingerprint: str) -> KeyClaim:
        """The claim a request will make on ``key`` (not made yet)."""
        return KeyClaim(keys.idempotency(account, key), fingerprint, self._inflight_ttl_ms)

    async def claim(self, claim: KeyClaim) -> None:
        """Make the claim; raises ``KeyHeld`` if another request holds the key."""
        value = await self._claim(keys=[claim.key], args=[claim.fingerprint, claim.ttl_ms])
        if value is not None:
            raise KeyHeld(Claim.parse(value))

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

    async def release(self, claim: KeyClaim) -> None:
        """Forget this request's claim: it left no trace, so a retry may proceed."""
        await self._redis.execute("DEL", claim.key)
