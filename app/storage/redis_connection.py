"""Redis connections that pack commands in C.

redis-py's asyncio connection packs every command in Python (its hiredis serializer serves
only the sync client); for the small scripts on the order path that packing was about a
third of the client's CPU per command. hiredis (already the reply parser) packs the same
RESP bytes in C.
"""

from __future__ import annotations

from typing import Any, cast

import hiredis
from redis.asyncio.connection import Connection, ConnectionPool, UnixDomainSocketConnection
from redis.exceptions import DataError


class _HiredisPacking:
    def pack_command(self, *args: Any) -> list[bytes]:
        # As redis-py does: a command name with spaces ('CONFIG GET') is several arguments.
        if isinstance(args[0], str):
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        packed = tuple(bytes(a) if isinstance(a, bytearray | memoryview) else a for a in args)
        try:
            # Any: hiredis's stub types the argument as a one-element tuple.
            return [hiredis.pack_command(cast(Any, packed))]
        except TypeError as exc:
            raise DataError(str(exc)) from exc


class HiredisConnection(_HiredisPacking, Connection):
    pass


class HiredisUnixConnection(_HiredisPacking, UnixDomainSocketConnection):
    pass


def pack_in_c(pool: ConnectionPool) -> ConnectionPool:
    """Make ``pool`` open connections that pack in C (TCP and unix sockets; others as is)."""
    if pool.connection_class is UnixDomainSocketConnection:
        pool.connection_class = HiredisUnixConnection
    elif pool.connection_class is Connection:
        pool.connection_class = HiredisConnection
    return pool
