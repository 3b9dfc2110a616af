"""A private PostgreSQL server a test can stop and start: ``initdb`` and ``pg_ctl`` from the
system's PostgreSQL binaries, on a free port, in a temporary directory.

PostgreSQL refuses to run as root: run as root (as CI does), the server runs as the
``postgres`` user, which owns its directory.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from bench.procs import free_port


def postgres_binaries() -> Path | None:
    """The newest installed PostgreSQL's bin directory, or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name),
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def why_no_private_postgres() -> str | None:
    """Why a private server cannot be started here, or None if it can."""
    if postgres_binaries() is None:
        return "no initdb/pg_ctl here (Debian: apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root with no 'postgres' user to run the server as"
    return None


class PrivatePostgres:
    def __init__(self, directory: Path) -> None:
        binaries = postgres_binaries()
        assert binaries is not None, why_no_private_postgres()
        self._bin = binaries
        self._dir = directory
        self._data = directory / "data"
        self.port = free_port()
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        command = [str(self._bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {done.stdout}{done.stderr}")

    def start(self) -> None:
        if not self._data.exists():
            self._dir.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(self._dir, "postgres", "postgres")
            self._run("initdb", "-D", str(self._data), "-A", "trust", "-U", "postgres")
        options = f"-p {self.port} -k {self._dir} -c listen_addresses=127.0.0.1"
        log = str(self._dir / "server.log")
        self._run("pg_ctl", "-D", str(self._data), "-o", options, "-l", log, "-w", "start")

    def stop(self) -> None:
        """A fast shutdown: sessions are ended, open transactions rolled back."""
        self._run("pg_ctl", "-D", str(self._data), "-m", "fast", "-w", "stop")

    def close(self) -> None:
        if (self._data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self._data), "-m", "immediate", "-w", "stop")
