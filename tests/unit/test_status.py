"""The order state machine: every edge the issue names, nothing leaves a final state."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.errors import InvalidTransition
from app.domain.orders import Order, OrderType, Side, TimeInForce
from app.domain.status import (
    FINAL_STATUSES,
    OPEN_STATUSES,
    OrderStatus,
    can_transition,
    check_transition,
    report_can_move,
)

S = OrderStatus
NOW = datetime(2026, 1, 2, tzinfo=UTC)

REQUIRED_EDGES = [
    (S.PENDING_NEW, S.NEW),
    (S.NEW, S.PARTIALLY_FILLED),
    (S.PARTIALLY_FILLED, S.FILLED),
    (S.NEW, S.PENDING_CANCEL),
    (S.PARTIALLY_FILLED, S.PENDING_CANCEL),
    (S.PENDING_CANCEL, S.CANCELED),
    (S.PENDING_NEW, S.REJECTED),
    (S.NEW, S.EXPIRED),
    (S.PENDING_NEW, S.UNKNOWN),
    (S.UNKNOWN, S.NEW),
    (S.UNKNOWN, S.REJECTED),
]


def order(status: OrderStatus) -> Order:
    return Order(
        id="x",
        client_order_id="c",
        account="a",
        symbol="AAPL",
        side=Side.BUY,
        qty=Decimal(1),
        type=OrderType.MARKET,
        limit_price=None,
        time_in_force=TimeInForce.DAY,
        status=status,
        created_at=NOW,
        updated_at=NOW,
    )


@pytest.mark.parametrize(("current", "target"), REQUIRED_EDGES)
def test_the_issues_transitions_are_legal(current: OrderStatus, target: OrderStatus) -> None:
    assert can_transition(current, target)
    assert order(current).transition(target, NOW).status is target


@pytest.mark.parametrize("final", sorted(FINAL_STATUSES))
@pytest.mark.parametrize("target", list(OrderStatus))
def test_final_statuses_are_absorbing(final: OrderStatus, target: OrderStatus) -> None:
    with pytest.raises(InvalidTransition):
        check_transition(final, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.NEW, S.PENDING_NEW),
        (S.NEW, S.REJECTED),
        (S.PENDING_NEW, S.PENDING_NEW),
        (S.PARTIALLY_FILLED, S.NEW),
        (S.NEW, S.UNKNOWN),
        (S.PENDING_CANCEL, S.REJECTED),
    ],
)
def test_illegal_transitions_raise(current: OrderStatus, target: OrderStatus) -> None:
    with pytest.raises(InvalidTransition):
        order(current).transition(target, NOW)


def test_open_and_final_partition_the_statuses() -> None:
    assert OPEN_STATUSES.isdisjoint(FINAL_STATUSES)
    assert set(OrderStatus) == OPEN_STATUSES | FINAL_STATUSES


@given(st.lists(st.sampled_from(list(OrderStatus)), max_size=30))
def test_any_walk_through_legal_edges_never_leaves_a_final_state(
    targets: list[OrderStatus],
) -> None:
    current = order(S.PENDING_NEW)
    reached_final = False
    for target in targets:
        if can_transition(current.status, target):
            assert not reached_final
            current = current.transition(target, NOW)
            reached_final = current.status.is_final
        else:
            with pytest.raises(InvalidTransition):
                current.transition(target, NOW)


def test_a_late_acknowledgement_never_undoes_a_cancel_in_progress() -> None:
    # The edge exists (a cancel the broker refused returns the order to new), but the
    # broker's 'new' report is the placement's acknowledgement, not that refusal.
    assert can_transition(S.PENDING_CANCEL, S.NEW)
    assert not report_can_move(S.PENDING_CANCEL, S.NEW)
    # Reports that do move an order out of pending_cancel.
    for reported in (S.CANCELED, S.PARTIALLY_FILLED, S.FILLED, S.EXPIRED):
        assert report_can_move(S.PENDING_CANCEL, reported)


@pytest.mark.parametrize(
    ("current", "reported"),
    [(c, r) for c in OrderStatus for r in OrderStatus if (c, r) != (S.PENDING_CANCEL, S.NEW)],
)
def test_every_other_report_moves_an_order_as_the_state_machine_does(
    current: OrderStatus, reported: OrderStatus
) -> None:
    assert report_can_move(current, reported) is can_transition(current, reported)
