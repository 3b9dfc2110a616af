"""Settings refuse combinations that would make the gateway wrong, not merely slow."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.config import Settings, SymbolDecimals


def test_reconciliation_must_wait_longer_than_a_placement_may_take() -> None:
    with pytest.raises(ValidationError, match="reconcile_after_s"):
        Settings(reconcile_after_s=0.5, broker_timeout_ms=1000)
    assert Settings(reconcile_after_s=1.5, broker_timeout_ms=1000).reconcile_after_s == 1.5


def test_an_orphaned_reservation_is_older_than_any_write_ahead_may_wait() -> None:
    # The sweep takes "no order row" for "never placed": an order still waiting for its
    # pacing token and then its commit would be placed after its reservation was given back.
    with pytest.raises(ValidationError, match="orphan_reservation_after_s"):
        Settings(storage_timeout_ms=10_000)  # the sweep's default age: 10 s
    with pytest.raises(ValidationError, match="orphan_reservation_after_s"):
        Settings(storage_timeout_ms=9_000, broker_guard={"max_wait_ms": 1_000})
    assert Settings(storage_timeout_ms=2000).storage_timeout_ms == 2000


def test_decimals_can_only_be_set_for_symbols_traded_here() -> None:
    with pytest.raises(ValidationError, match="not in the universe"):
        Settings(symbol_decimals={"ZZZZ": SymbolDecimals(qty=0)})
    settings = Settings(symbol_decimals={"SPY": SymbolDecimals(qty=0)})
    instruments = settings.instruments()
    assert (instruments["SPY"].qty_decimals, instruments["AAPL"].qty_decimals) == (0, 6)
    assert instruments["AAPL"].price_decimals == 2


def test_a_batch_must_go_before_its_orders_time_out() -> None:
    with pytest.raises(ValidationError, match=r"placement_batching\.max_wait_ms"):
        Settings(placement_batching={"mode": "throughput", "max_wait_ms": 51})
    with pytest.raises(ValidationError, match="mode"):
        Settings(placement_batching={"mode": "fastest"})
    with pytest.raises(ValidationError, match="max_orders"):
        Settings(placement_batching={"mode": "throughput", "max_orders": 0})
    # In latency mode the window is unused, so it is not held against the timeout.
    assert Settings(placement_batching={"max_wait_ms": 500}).placement_batching.mode == "latency"
    batching = Settings(placement_batching={"mode": "throughput"}).placement_batching
    assert (batching.max_orders, batching.max_wait_ms) == (50, 10)
