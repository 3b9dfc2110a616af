"""Lua scripts, each in its own .lua file, registered once and run by EVALSHA."""

from __future__ import annotations

from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript


def load_script(redis: Redis, package: str, name: str, prelude: str | None = None) -> AsyncScript:
    """Register ``<package>/lua/<name>.lua``, after ``<prelude>.lua`` (shared helpers) if given."""
    files = resources.files(package)
    source = files.joinpath(f"lua/{name}.lua").read_text()
    if prelude is not None:
        source = files.joinpath(f"lua/{prelude}.lua").read_text() + "\n" + source
    # redis-py's Script object sends EVALSHA and falls back to EVAL after a NOSCRIPT
    # (a restarted or failed-over server), so the cache never goes stale.
    return redis.register_script(source)
