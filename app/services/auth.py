"""API keys: issued once in clear, stored only as a SHA-256 hash, cached briefly in process."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from app.domain.accounts import check_account_name
from app.domain.errors import Forbidden, NotAuthenticated
from app.domain.ids import new_id
from app.services.inflight import InFlight
from app.storage.repositories import ApiKeyRepository


class Role(StrEnum):
    VIEWER = "viewer"
    TRADER = "trader"
    ADMIN = "admin"


_RANK = {Role.VIEWER: 0, Role.TRADER: 1, Role.ADMIN: 2}


@dataclass(frozen=True, slots=True)
class Principal:
    account: str
    role: Role
    key_id: str = ""

    @property
    def actor(self) -> str:
        """Who did something, for audit trails: account, role and key id."""
        return f"{self.account}/{self.role.value}/{self.key_id}"

    def require(self, role: Role) -> None:
        if _RANK[self.role] < _RANK[role]:
            raise Forbidden(f"this needs the {role.value} role; the key has {self.role.value}")


def hash_key(key: str) -> str:
    # Keys carry 256 random bits, so a fast hash is enough; no salt or KDF needed.
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeyService:
    def __init__(self, keys: ApiKeyRepository, cache_ttl_s: float = 1.0) -> None:
        self._keys = keys
        self._cache_ttl_s = cache_ttl_s
        # A revoked key stops working within cache_ttl_s on every worker.
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        # One database lookup per key at a time, however many requests need it: when a
        # busy key's entry expired, every request in flight used to look it up at once
        # (128 concurrent orders stalled up to ~0.9 s, once a second).
        self._lookups: InFlight[str, Principal | None] = InFlight()

    async def create(self, account: str, role: Role) -> tuple[str, str]:
        """Issue a key; returns (key id, the key in clear: shown once, never stored)."""
        check_account_name(account)
        key = "og_" + secrets.token_urlsafe(32)
        key_id = new_id()
        await self._keys.create(key_id, hash_key(key), account, role.value, datetime.now(UTC))
        return key_id, key

    async def revoke(self, key_id: str) -> bool:
        return await self._keys.revoke(key_id, datetime.now(UTC))

    async def authenticate(self, key: str) -> Principal:
        """The key's principal, as the database said at most ``cache_ttl_s`` ago. In the last
        fifth of that a key in use is looked up again in the background, so its requests do
        not wait for the database."""
        digest = hash_key(key)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is None or cached[0] <= now:
            principal = await asyncio.shield(self._lookups.start(digest, self._find))
        else:
            if now >= cached[0] - self._cache_ttl_s / 5:
                self._lookups.start(digest, self._find)  # in the background
            principal = cached[1]
        if principal is None:
            raise NotAuthenticated("unknown or revoked API key")
        return principal

    async def _find(self, digest: str) -> Principal | None:
        read_at = time.monotonic()
        record = await self._keys.find(digest)
        principal = None
        if record is not None and not record.revoked:
            principal = Principal(record.account, Role(record.role), record.id)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (read_at + self._cache_ttl_s, principal)
        return principal
