"""What a user meets first: the commands `make run` runs, and what they print."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from app.redisio.embedded import find_redis_server
from tests.conftest import REPO, DatabaseFactory, launch_gateway
from tests.helpers.orders import eventually_status, market


async def test_make_runs_commands_print_what_matters_and_nothing_misleading(
    database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    # serve as make run starts it: its own private server, the development profile.
    gateway = launch_gateway(
        tmp_path,
        database_factory.create("sqlite"),
        None,
        workers=1,
        extra_env={
            "ORDERGATE_CONFIG": str(REPO / "config" / "development.yaml"),
            "ORDERGATE_BROKER_TIMEOUT_MS": "1000",
        },
    )
    try:
        migrate = gateway.run_cli("migrate")
        assert migrate.returncode == 0, migrate.stderr
        assert "setup plugin" not in migrate.stderr  # alembic's chatter, on every run

        first, again = gateway.run_cli("keys", "demo"), gateway.run_cli("keys", "demo")
        assert first.stdout == again.stdout  # the same key, kept in the data directory
        for run in (first, again):
            assert "shown only now" not in run.stderr, run.stderr
        assert "kept in" in first.stderr

        async with gateway.client(first.stdout.strip()) as client:
            order = (await client.post("/v1/orders", json=market())).json()
            await eventually_status(client, order["id"], "filled")
    finally:
        gateway.stop()
    assert gateway.log_path is not None
    log = gateway.log_path.read_text()
    server = Path(find_redis_server()).name  # redis-server, or valkey-server from the wheel
    assert f"ordergate: private {server} at " in log, log
    # The account's first load into a fresh Redis is routine, not a warning.
    lines = [json.loads(line) for line in log.splitlines()]  # every line is JSON
    assert any(
        line["level"] == "info"
        and line["logger"] == "app.services.risk"
        and line["msg"] == "risk state of account demo loaded from the database"
        for line in lines
    ), log
    assert not [line for line in lines if line["level"] in ("warning", "error")], log


def test_keys_create_says_a_new_key_is_shown_only_once(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'og.db'}", "PATH": "/usr/bin"}
    ordergate = [sys.executable, "-m", "app.cli"]
    subprocess.run([*ordergate, "migrate"], env=env, cwd=REPO, check=True, capture_output=True)
    created = subprocess.run(
        [*ordergate, "keys", "create", "--account", "a1"],
        env=env,
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    )
    assert "shown only now" in created.stderr
