"""Settings refuse combinations that would make the gateway wrong, not merely slow."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.config import Settings


def test_reconciliation_must_wait_longer_than_a_placement_may_take() -> None:
    with pytest.raises(ValidationError, match="reconcile_after_s"):
        Settings(reconcile_after_s=0.5, broker_timeout_ms=1000)
    assert Settings(reconcile_after_s=1.5, broker_timeout_ms=1000).reconcile_after_s == 1.5
