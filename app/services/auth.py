"""API keys: issued once in clear, stored only as a SHA-256 hash, cached briefly in process."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from app.domain.accounts import check_account_name
from app.domain.errors import Forbidden, NotAuthenticated
from app.domain.ids import new_id
from app.services.cache import ReadThroughCache
from app.storage.sql.repositories import ApiKeyRepository


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
    def __init__(
        self,
        keys: ApiKeyRepository,
        cache_ttl_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keys = keys
        # A revoked key stops working within cache_ttl_s on every worker. One database
        # lookup per key at a time: when a busy key's entry expired, every request in
        # flight used to look it up at once (128 concurrent orders stalled up to ~0.9 s).
        self._principals: ReadThroughCache[str, Principal | None] = ReadThroughCache(
            self._find, cache_ttl_s, max_entries=10_000, clock=clock
        )

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
        """The key's principal, as the database said at most ``cache_ttl_s`` ago."""
        principal = await self._principals.get(hash_key(key))
        if principal is None:
            raise NotAuthenticated("unknown or revoked API key")
        return principal

    async def _find(self, digest: str) -> Principal | None:
        record = await self._keys.find(digest)
        if record is None or record.revoked:
            return None
        return Principal(record.account, Role(record.role), record.id)
