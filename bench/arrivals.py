"""An in-process load driver for benchmarks of async calls: open loop at a constant arrival
rate (an arrival clock in a child process), or closed loop at fixed concurrency."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from app.domain.errors import RiskUnavailable
from app.process import die_with_parent

# A measured call: returns its outcome's name.
Call = Coroutine[Any, Any, str]


# -- measuring ---------------------------------------------------------------------------------
@dataclass(slots=True)
class Recorder:
    latencies: list[float] = field(default_factory=list)  # from the intended start
    due: list[float] = field(default_factory=list)  # each latency's intended start
    service: list[float] = field(default_factory=list)  # from the actual start
    send_lags: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    started: int = 0
    window_s: float = 0.0  # summed over slices: first start to last completion
    last_done: float = 0.0


async def timed(call: Call, due: float, started: float, rec: Recorder) -> None:
    try:
        outcome = await call
    except (RiskUnavailable, RedisError, OSError, TimeoutError) as exc:
        rec.errors[type(exc).__name__] += 1  # reported, and no latency: it decided nothing
        return
    done = time.perf_counter()
    rec.latencies.append(done - due)
    rec.due.append(due)
    rec.service.append(done - started)
    rec.outcomes[outcome] += 1
    rec.last_done = max(rec.last_done, done)


class ArrivalClock:
    """Arrivals at a constant rate, from a child process that sleeps until each call is due
    and then writes one byte to a pipe. The loop wakes for it as for a request on a socket;
    the clock shares no GIL with the loop and never spins. (The loop's own timers tick in
    milliseconds, too coarse for calls due every half millisecond; a thread would fight the
    loop for the GIL; a loop spinning to be punctual would take a core from Redis.)"""

    _SOURCE = textwrap.dedent(
        """
        import ctypes, os, sys, time
        try:  # Linux wakes a sleeper up to 50 us late by default (timer slack): ask for 1 us
            ctypes.CDLL(None).prctl(29, 1000, 0, 0, 0)
        except (OSError, AttributeError):
            pass
        for line in sys.stdin:  # "t0 rate count": a byte for each call n at t0 + n / rate
            t0, rate, count = line.split()
            t0, rate = float(t0), float(rate)
            for n in range(int(count)):
                delay = t0 + n / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                os.write(1, b".")
        """
    )

    def __init__(self) -> None:
        # perf_counter is CLOCK_MONOTONIC: the child's times and ours are the same clock.
        self._process = subprocess.Popen(
            [sys.executable, "-S", "-c", self._SOURCE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            preexec_fn=die_with_parent,
        )
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._commands = self._process.stdin
        self.fd = self._process.stdout.fileno()
        os.set_blocking(self.fd, False)

    def schedule(self, t0: float, rate: float, count: int) -> None:
        """One tick per call ``n`` at ``t0 + n / rate``."""
        self._commands.write(f"{t0!r} {rate!r} {count}\n".encode())
        self._commands.flush()

    def close(self) -> None:
        self._commands.close()  # the child's stdin ends: it exits
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()

    def __enter__(self) -> ArrivalClock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def open_loop(
    clock: ArrivalClock, make: Callable[[int], Call], count: int, rate: float, rec: Recorder
) -> None:
    """Start call ``n`` (of ``count``) at ``t0 + n / rate``, as ``clock`` ticks; its latency
    counts from then. Woken late, the due calls start at once: none is skipped."""
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []
    every_call_started = loop.create_future()
    t0 = time.perf_counter() + 0.002

    def on_ticks() -> None:
        now = time.perf_counter()
        try:
            ticks = len(os.read(clock.fd, 65536))
        except BlockingIOError:
            return
        for _ in range(ticks):
            n = len(tasks)
            due = t0 + n / rate
            rec.send_lags.append(now - due)
            tasks.append(loop.create_task(timed(make(n), due, now, rec)))
        if len(tasks) >= count:
            loop.remove_reader(clock.fd)
            every_call_started.set_result(None)

    loop.add_reader(clock.fd, on_ticks)
    clock.schedule(t0, rate, count)
    try:
        await every_call_started
    finally:
        loop.remove_reader(clock.fd)
    await asyncio.gather(*tasks)
    rec.started += count
    rec.window_s += max(rec.last_done, t0) - t0


async def closed_loop(
    make: Callable[[int], Call], seconds: float, concurrency: int, rec: Recorder
) -> int:
    """Keep ``concurrency`` calls in flight for ``seconds``; returns how many were started."""
    numbers = itertools.count()
    t0 = time.perf_counter()
    deadline = t0 + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            call = make(next(numbers))  # the call's arguments are made off its clock
            start = time.perf_counter()
            await timed(call, start, start, rec)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    started = next(numbers)
    rec.started += started
    rec.window_s += time.perf_counter() - t0
    return started
