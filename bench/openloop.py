"""Load generator: open loop at a constant arrival rate, or closed loop at fixed concurrency.

Open loop: request ``n`` is due at ``t0 + n / rate`` whatever happened to earlier requests, and
its latency runs from that intended time, not from when it actually left. A stalled server
therefore shows up as queueing in the percentiles instead of quietly lowering the offered load
(coordinated omission). A request that finds no idle connection waits in ``pending`` while a new
connection opens, so one slow reply never holds back the next send.

Closed loop: ``connections`` requests are kept in flight for ``duration_s``; each reply triggers
the next request on the same connection. It measures the maximum throughput; its latencies run
from the actual send.

The generator runs in its own process (``LoadProcess``) so it never shares an event loop, or a
GIL, with the servers it measures.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections import Counter, deque
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, fields
from types import TracebackType
from typing import Any

import numpy as np
import uvloop

from bench.wire import ClientConnection, RequestTemplate


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """One measured phase against one server. ``rate`` set: open loop; ``None``: closed loop."""

    host: str
    port: int
    template: RequestTemplate
    duration_s: float
    rate: float | None = None
    # Closed loop: the concurrency. Open loop: connections opened before the clock starts.
    connections: int = 8
    # Open loop: ceiling on the pool; requests beyond it queue (and their latency shows it).
    max_connections: int = 512
    # How long to wait for replies still outstanding once the last request is sent.
    drain_s: float = 10.0


@dataclass(slots=True)
class PhaseResult:
    """What a phase measured. Latencies are of 2xx replies only, in milliseconds."""

    mode: str
    offered_per_s: float | None
    duration_s: float
    sent: int
    ok: int
    errors: dict[str, int]
    # The first reply body seen for each non-2xx status: says *why* (e.g. a problem code).
    error_samples: dict[str, str]
    achieved_per_s: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    # How late the generator's timer handed each request out (open loop): already inside the
    # latencies, shown so a lagging client is not mistaken for a slow server.
    send_lag_p50_ms: float | None
    send_lag_p99_ms: float | None
    peak_connections: int
    # Share of one core the generator used: near 1.0 means the client, not the server, was
    # the limit and the throughput figure is a floor on the server's real capacity.
    client_cpu_share: float
    # Seconds from the first send to the last answer (or the phase's length, if longer).
    window_s: float
    # The raw samples (seconds) behind the percentiles, so that slices of one phase can be
    # merged (``merge_phases``); left out of the summary.
    latencies_s: list[float] = field(default_factory=list, repr=False)
    send_lags_s: list[float] = field(default_factory=list, repr=False)
    # When each of ``latencies_s`` was due, in seconds from the phase's start (merged slices
    # follow one another): the latency over time, for plots.
    sent_at_s: list[float] = field(default_factory=list, repr=False)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def summary(self) -> dict[str, Any]:
        """The result's fields for a report, without the raw samples."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _RAW_SAMPLES}


_RAW_SAMPLES = frozenset({"latencies_s", "send_lags_s", "sent_at_s"})


def merge_phases(phases: Sequence[PhaseResult]) -> PhaseResult:
    """Slices of one phase run apart (closed-loop rounds) as one phase: counts added,
    throughput over their summed windows, percentiles of all their samples together."""
    if not phases:
        raise ValueError("no phases to merge")
    first = phases[0]
    if any(p.mode != first.mode for p in phases):
        raise ValueError(f"phases of different modes: {sorted({p.mode for p in phases})}")
    errors: Counter[str] = Counter()
    samples: dict[str, str] = {}
    for p in phases:
        errors.update(p.errors)
        for status, body in p.error_samples.items():
            samples.setdefault(status, body)
    duration = sum(p.duration_s for p in phases)
    sent_at: list[float] = []
    offset = 0.0
    for p in phases:
        sent_at.extend(offset + t for t in p.sent_at_s)
        offset += p.window_s
    return _phase_result(
        mode=first.mode,
        offered_per_s=first.offered_per_s,
        duration_s=duration,
        window_s=sum(p.window_s for p in phases),
        sent=sum(p.sent for p in phases),
        ok=sum(p.ok for p in phases),
        errors=dict(errors),
        error_samples=samples,
        latencies_s=[x for p in phases for x in p.latencies_s],
        send_lags_s=[x for p in phases for x in p.send_lags_s],
        sent_at_s=sent_at,
        peak_connections=max(p.peak_connections for p in phases),
        client_cpu_share=sum(p.client_cpu_share * p.duration_s for p in phases) / duration
        if duration > 0
        else 0.0,
    )


@dataclass(slots=True)
class _Recorder:
    latencies: list[float] = field(default_factory=list)
    intended: list[float] = field(default_factory=list)  # each latency's intended send
    send_lags: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: dict[str, str] = field(default_factory=dict)  # first body per status
    sent: int = 0
    ok: int = 0
    last_done: float = 0.0

    def response(self, status: int, intended: float, done: float, body: bytes) -> None:
        if 200 <= status < 300:
            self.ok += 1
            self.latencies.append(done - intended)
            self.intended.append(intended)
        else:
            self.errors[str(status)] += 1
            self.error_samples.setdefault(str(status), body.decode(errors="replace"))
        self.last_done = max(self.last_done, done)


class _Driver:
    """Owns the connection pool and the queue of requests waiting for a connection."""

    def __init__(self, spec: LoadSpec, rec: _Recorder) -> None:
        self.spec = spec
        self.rec = rec
        self.closed_loop = spec.rate is None
        self.limit = spec.connections if self.closed_loop else spec.max_connections
        self.idle: list[ClientConnection] = []
        self.conns: set[ClientConnection] = set()
        self.pending: deque[tuple[int, float]] = deque()
        self.opening = 0
        self.in_flight = 0  # dispatched (sent or pending) and not yet finished
        self.next_n = 0
        self.deadline = float("inf")
        self.peak = 0
        self.finished = False
        self.quiet = asyncio.Event()  # set when nothing is in flight
        self.quiet.set()
        self.none_open = asyncio.Event()  # set when the last connection is gone
        self._tasks: set[asyncio.Task[None]] = set()

    def dispatch(self, intended: float) -> None:
        n, self.next_n = self.next_n, self.next_n + 1
        # The scheduler's own lateness; waiting for a free connection is not part of it.
        self.rec.send_lags.append(time.perf_counter() - intended)
        self.in_flight += 1
        self.quiet.clear()
        if self.idle:
            self._send(self.idle.pop(), n, intended)
        else:
            self.pending.append((n, intended))
            self._open_more()

    def _send(self, conn: ClientConnection, n: int, intended: float) -> None:
        self.rec.sent += 1
        conn.send(self.spec.template.build(n), intended)

    def _release(self, conn: ClientConnection) -> None:
        if not conn.idle:
            return
        if self.pending:
            n, intended = self.pending.popleft()
            self._send(conn, n, intended)
        else:
            self.idle.append(conn)  # LIFO: the warmest connection is reused first

    def _request_finished(self) -> None:
        self.in_flight -= 1
        if self.closed_loop and not self.finished and time.perf_counter() < self.deadline:
            self.dispatch(time.perf_counter())
        if self.in_flight == 0:
            self.quiet.set()

    def _on_response(
        self, conn: ClientConnection, status: int, intended: float, done: float, body: bytes
    ) -> None:
        if self.finished:
            return
        self.rec.response(status, intended, done, body)
        self._release(conn)
        self._request_finished()

    def _on_lost(self, conn: ClientConnection, intended: float | None) -> None:
        self.conns.discard(conn)
        if not self.conns:
            self.none_open.set()
        if conn in self.idle:
            self.idle.remove(conn)
        if self.finished:
            return
        if intended is not None:
            self.rec.errors["conn_lost"] += 1
            self._request_finished()
        self._open_more()

    def _open_more(self) -> None:
        while len(self.pending) > self.opening and len(self.conns) + self.opening < self.limit:
            self.opening += 1
            task = asyncio.get_running_loop().create_task(self._open())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _open(self) -> None:
        try:
            conn = await self._connect()
        except OSError:
            self.opening -= 1
            # Fail one waiting request so a dead server ends the phase instead of hanging it.
            if self.pending and not self.finished:
                self.pending.popleft()
                self.rec.errors["connect"] += 1
                self._request_finished()
            return
        self.opening -= 1
        if self.finished:  # opened too late for a phase that is over
            conn.close()
            return
        self._release(conn)

    async def _connect(self) -> ClientConnection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(
            lambda: ClientConnection(self._on_response, self._on_lost),
            self.spec.host,
            self.spec.port,
        )
        self.conns.add(conn)
        self.peak = max(self.peak, len(self.conns))
        return conn

    async def preconnect(self, count: int) -> None:
        results = await asyncio.gather(
            *(self._connect() for _ in range(count)), return_exceptions=True
        )
        self.idle.extend(r for r in results if isinstance(r, ClientConnection))

    async def drain(self) -> None:
        try:
            await asyncio.wait_for(self.quiet.wait(), self.spec.drain_s)
        except TimeoutError:
            self.rec.errors["timeout"] += self.in_flight
        self.finished = True
        await self.close_all()

    async def close_all(self, timeout_s: float = 2.0) -> None:
        """Close every connection and wait until each is gone: the process runs many phases."""
        if not self.conns:
            return
        self.none_open.clear()
        for conn in list(self.conns):
            conn.close()
        # The sockets are released in connection_lost, a loop iteration or more after close().
        try:
            await asyncio.wait_for(self.none_open.wait(), timeout_s)
        except TimeoutError:
            for conn in list(self.conns):
                conn.abort()


async def _schedule_open(driver: _Driver, rate: float, duration_s: float, t0: float) -> None:
    total = round(rate * duration_s)
    n = 0
    while n < total:
        now = time.perf_counter()
        # Send everything that is due; if we woke late, catch up at once, never skip.
        while n < total and t0 + n / rate <= now:
            driver.dispatch(t0 + n / rate)
            n += 1
        if n < total:
            await asyncio.sleep(max(0.0, t0 + n / rate - time.perf_counter()))


async def _run(spec: LoadSpec) -> PhaseResult:
    rec = _Recorder()
    driver = _Driver(spec, rec)
    await driver.preconnect(spec.connections)  # connection setup stays outside the clock
    cpu0 = time.process_time()
    t0 = time.perf_counter() + 0.005
    if spec.rate is not None:
        await _schedule_open(driver, spec.rate, spec.duration_s, t0)
    else:
        driver.deadline = t0 + spec.duration_s
        await asyncio.sleep(max(0.0, t0 - time.perf_counter()))
        for _ in range(spec.connections):
            driver.dispatch(time.perf_counter())
        await asyncio.sleep(max(0.0, driver.deadline - time.perf_counter()))
    await driver.drain()
    cpu_share = (time.process_time() - cpu0) / max(time.perf_counter() - t0, 1e-9)
    return _summarize(spec, rec, driver.peak, t0, cpu_share)


def _summarize(
    spec: LoadSpec, rec: _Recorder, peak: int, t0: float, cpu_share: float
) -> PhaseResult:
    mode = f"open@{spec.rate:g}" if spec.rate is not None else f"closed c={spec.connections}"
    return _phase_result(
        mode=mode,
        offered_per_s=spec.rate,
        duration_s=spec.duration_s,
        window_s=max(spec.duration_s, rec.last_done - t0),
        sent=rec.sent,
        ok=rec.ok,
        errors=dict(rec.errors),
        error_samples=rec.error_samples,
        latencies_s=rec.latencies,
        send_lags_s=rec.send_lags,
        sent_at_s=[t - t0 for t in rec.intended],
        peak_connections=peak,
        client_cpu_share=cpu_share,
    )


def _phase_result(
    *,
    mode: str,
    offered_per_s: float | None,
    duration_s: float,
    window_s: float,
    sent: int,
    ok: int,
    errors: dict[str, int],
    error_samples: dict[str, str],
    latencies_s: list[float],
    send_lags_s: list[float],
    sent_at_s: list[float],
    peak_connections: int,
    client_cpu_share: float,
) -> PhaseResult:
    """A phase's result from its counts and raw samples (one phase, or merged slices)."""
    lat = percentiles_ms(latencies_s, (50, 95, 99, 100))
    lag = percentiles_ms(send_lags_s, (50, 99))
    return PhaseResult(
        mode=mode,
        offered_per_s=offered_per_s,
        duration_s=duration_s,
        sent=sent,
        ok=ok,
        errors=errors,
        error_samples=error_samples,
        achieved_per_s=ok / window_s if window_s > 0 else 0.0,
        p50_ms=lat[0],
        p95_ms=lat[1],
        p99_ms=lat[2],
        max_ms=lat[3],
        send_lag_p50_ms=lag[0],
        send_lag_p99_ms=lag[1],
        peak_connections=peak_connections,
        client_cpu_share=client_cpu_share,
        window_s=window_s,
        latencies_s=latencies_s,
        send_lags_s=send_lags_s,
        sent_at_s=sent_at_s,
    )


def percentiles_ms(samples: list[float], qs: tuple[int, ...]) -> list[float | None]:
    if not samples:
        return [None] * len(qs)
    values = np.percentile(np.asarray(samples) * 1000.0, qs)
    return [float(v) for v in values]


def run_load(spec: LoadSpec) -> PhaseResult:
    """Run one phase on a fresh uvloop in the calling process (use ``LoadProcess`` normally)."""
    return uvloop.run(_run(spec))


class LoadProcess:
    """A separate process that runs phases one after another, reused for the whole benchmark."""

    def __init__(self) -> None:
        # spawn, not fork: the child must not inherit the parent's threads or event loop.
        self._pool = ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn")
        )

    def run(self, spec: LoadSpec) -> PhaseResult:
        limit = spec.duration_s + spec.drain_s + 60.0
        return self._pool.submit(run_load, spec).result(timeout=limit)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> LoadProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
