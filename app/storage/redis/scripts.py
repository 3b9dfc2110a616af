"""Lua scripts, each in its own .lua file, run by EVALSHA."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

from app.redisio.multiplexed import LuaScript, MultiplexedRedis


def load_script(
    redis: MultiplexedRedis, package: str, name: str, preludes: Sequence[str] = ()
) -> LuaScript:
    """``<package>/lua/<name>.lua``, after each ``<prelude>.lua`` (shared helpers)."""
    files = resources.files(package)
    parts = [files.joinpath(f"lua/{part}.lua").read_text() for part in (*preludes, name)]
    return redis.script("\n".join(parts))
