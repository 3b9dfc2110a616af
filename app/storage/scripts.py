"""Lua scripts, each in its own .lua file, run by EVALSHA."""

from __future__ import annotations

from importlib import resources

from app.storage.redis_mux import LuaScript, MultiplexedRedis


def load_script(
    redis: MultiplexedRedis, package: str, name: str, prelude: str | None = None
) -> LuaScript:
    """``<package>/lua/<name>.lua``, after ``<prelude>.lua`` (shared helpers) if given."""
    files = resources.files(package)
    source = files.joinpath(f"lua/{name}.lua").read_text()
    if prelude is not None:
        source = files.joinpath(f"lua/{prelude}.lua").read_text() + "\n" + source
    return redis.script(source)
