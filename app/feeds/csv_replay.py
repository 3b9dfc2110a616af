"""CSV replay: recorded ticks (``timestamp,symbol,price,size``, with that header), sent at
their recorded pace or ``speed`` times faster (``speed`` 0: as fast as they can go).

A timestamp is ISO 8601 with a zone (``2026-03-02T14:30:00.125Z``) or seconds since the
epoch. Rows are replayed as recorded, whatever they hold: a row that does not parse
reaches the processor as it is and ends in the dead-letter stream, counted, as a bad tick
from a live feed would. Rows with one timestamp go as one batch.
"""

from __future__ import annotations

import asyncio
import csv
import itertools
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path

from app.domain.marketdata import RawTick

COLUMNS = ("timestamp", "symbol", "price", "size")


def timestamp_us(text: str) -> int | None:
    """Microseconds since the epoch, or None if ``text`` is no timestamp."""
    text = text.strip()
    try:
        return round(float(text) * 1_000_000)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None  # a time without a zone is ambiguous: not guessed
    return round(moment.timestamp() * 1_000_000)


def read_rows(path: Path) -> Iterator[tuple[int | None, list[str]]]:
    """Each row's time (None: unreadable) and its fields, in file order."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = set(COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: the header lacks {sorted(missing)} (want {COLUMNS})")
        for row in reader:
            fields = [(row.get(name) or "").strip() for name in COLUMNS]
            yield timestamp_us(fields[0]), fields


async def replay_csv(
    path: Path, speed: float, append: Callable[[list[RawTick]], Awaitable[None]]
) -> int:
    """Replay the file once; the rows sent. Unreadable times go with the row before."""
    sent = 0
    first_us: int | None = None
    started = time.monotonic()
    last_us: int | None = None

    def batch_time(row: tuple[int | None, list[str]]) -> int | None:
        nonlocal last_us
        ts, _ = row
        if ts is not None:
            last_us = ts
        return last_us

    for ts, rows in itertools.groupby(read_rows(path), key=batch_time):
        batch = list(rows)
        if ts is not None and speed > 0:
            first_us = ts if first_us is None else first_us
            due = started + (ts - first_us) / 1_000_000 / speed
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        received_ns = time.time_ns()
        await append(
            [
                RawTick(symbol, price, size, "" if row_ts is None else str(row_ts), received_ns)
                for row_ts, (_, symbol, price, size) in batch
            ]
        )
        sent += len(batch)
    return sent
