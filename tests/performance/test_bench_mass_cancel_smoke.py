"""``python -m bench mass-cancel`` at a tiny size: it starts everything, places the
orders, cancels them all and checks each came back canceled. Never timed."""

from __future__ import annotations

import pytest

from bench import main


def test_the_mass_cancel_bench_runs_and_checks_every_order(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["mass-cancel", "--orders", "12", "--runs", "1"]) == 0
    out = capsys.readouterr().out
    assert "run 1: 12 orders canceled in" in out
    assert "median:" in out
