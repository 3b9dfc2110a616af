"""Clients of a running gateway, each with a key of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from tests.conftest import Gateway


@asynccontextmanager
async def trader_and_admin(
    gateway: Gateway, account: str
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """A trader of ``account`` and an admin (who drives the paper exchange and reads the
    guard's state), each on a new key."""
    async with (
        gateway.client(gateway.new_key(account)) as trader,
        gateway.client(gateway.new_key("ops", "admin")) as admin,
    ):
        yield trader, admin
