"""Lua scripts, each in its own .lua file, registered once and run by EVALSHA."""

from __future__ import annotations

from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript


def load_script(redis: Redis, package: str, name: str) -> AsyncScript:
    source = resources.files(package).joinpath(f"lua/{name}.lua").read_text()
    # redis-py's Script object sends EVALSHA and falls back to EVAL after a NOSCRIPT
    # (a restarted or failed-over server), so the cache never goes stale.
    return redis.register_script(source)
