"""Child processes for the benchmark: servers that must answer before the clock starts."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it; small race, fine for a bench)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_command(argv: Sequence[str], env: Mapping[str, str], timeout_s: float = 120.0) -> str:
    """Run a command to completion and return its stdout; raise with its output on failure."""
    done = subprocess.run(
        list(argv), env=dict(env), capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {done.returncode}\n{done.stdout}\n{done.stderr}".strip()
        )
    return done.stdout


class ServerProcess:
    """A server subprocess, logged to a file, ready once ``ready_url`` answers 200."""

    def __init__(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self, port: int, ready_path: str, timeout_s: float = 60.0) -> ServerProcess:
        """Start, then poll ``GET ready_path`` on 127.0.0.1:``port`` until it answers 200."""
        with self.log_path.open("ab") as log:
            # Own session: a Ctrl-C at the terminal reaches us, and we stop the server cleanly.
            self._process = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log_tail()}")
            if _answers_200(port, ready_path):
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} not ready within {timeout_s}s:\n{self.log_tail()}")

    def cpu_seconds(self) -> float | None:
        """CPU time the server and its live child processes (the gateway's applier, uvicorn's
        workers) have used so far (Linux ``/proc``); None where unavailable."""
        return tree_cpu_seconds(self.pid)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (uvicorn shuts down gracefully), then SIGKILL if it does not."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            # The whole session: uvicorn may have spawned helpers of its own.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def tree_cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of ``pid`` and its live descendants, from Linux ``/proc``; None where
    unavailable. (A dead child's time is not counted: only children still running.)"""
    stats = _proc_stats()
    if pid is None or stats is None or pid not in stats:
        return None
    ticks = sum(stats[p][1] for p in _tree(pid, stats))
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_rss_bytes(pid: int | None) -> int | None:
    """Resident memory of ``pid`` and its live descendants (a server's workers, its applier
    and worker): psutil's if installed, else Linux ``/proc``; None where unavailable."""
    if pid is None:
        return None
    try:
        import psutil
    except ImportError:
        return _proc_tree_rss(pid)
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.Error):  # gone meanwhile
            total += int(process.memory_info().rss)
    return total


def _proc_tree_rss(pid: int) -> int | None:
    stats = _proc_stats()
    if stats is None or pid not in stats:
        return None
    total = 0
    for member in _tree(pid, stats):
        with contextlib.suppress(OSError, IndexError, ValueError):
            # statm's second field: resident pages.
            total += int(Path(f"/proc/{member}/statm").read_text().split()[1])
    return total * os.sysconf("SC_PAGE_SIZE")


def _proc_stats() -> dict[int, tuple[int, int]] | None:
    """pid -> (parent pid, utime + stime ticks) of every live process; None without /proc."""
    stats: dict[int, tuple[int, int]] = {}
    try:
        entries = [entry for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return None
    for entry in entries:
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        # ppid, utime and stime: fields 4, 14 and 15 of proc(5); 2, 12 and 13 once pid and
        # comm are cut.
        stats[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return stats


def _tree(pid: int, stats: dict[int, tuple[int, int]]) -> list[int]:
    """``pid`` and its descendants."""
    members, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        members.append(parent)
        frontier.extend(child for child, (ppid, _) in stats.items() if ppid == parent)
    return members


def _answers_200(port: int, path: str) -> bool:
    # http.client rather than httpx: no client-side logging when the CLI logs at INFO.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2.0)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def wait_until_idle(
    servers: Sequence[ServerProcess],
    busy_share: float = 0.05,
    window_s: float = 0.5,
    timeout_s: float = 30.0,
) -> bool:
    """Wait until every server uses under ``busy_share`` of a core; False if it never did.

    A phase that overloads a server leaves work queued in it after the client hangs up; the
    next phase must not be measured while that backlog still takes CPU from it.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        before = [server.cpu_seconds() for server in servers]
        time.sleep(window_s)
        after = [server.cpu_seconds() for server in servers]
        if all(
            a is None or b is None or (a - b) / window_s < busy_share
            for a, b in zip(after, before, strict=True)
        ):
            return True
        if time.monotonic() >= deadline:
            return False
