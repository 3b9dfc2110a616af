"""Order status state machine (after NautilusTrader's order FSM, reduced to what a gateway sees).

pending_new -> new -> partially_filled -> filled
new / partially_filled -> pending_cancel -> canceled
pending_new -> denied (the gateway's own risk checks refused it) ; pending_new -> rejected
(the venue refused it) ; new -> expired
unknown: the placement's outcome was not learned; it is resolved by asking the broker.

A broker may report a fill before its acknowledgement reaches us, and a fill may race a
cancel request, so those edges are legal too. Anything else raises ``InvalidTransition``.
"""

from __future__ import annotations

from enum import StrEnum

from app.domain.errors import InvalidTransition


class OrderStatus(StrEnum):
    PENDING_NEW = "pending_new"
    NEW = "new"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    PENDING_CANCEL = "pending_cancel"
    CANCELED = "canceled"
    DENIED = "denied"
    REJECTED = "rejected"
    EXPIRED = "expired"
    UNKNOWN = "unknown"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


S = OrderStatus

FINAL_STATUSES = frozenset({S.FILLED, S.CANCELED, S.DENIED, S.REJECTED, S.EXPIRED})
# Open: may still trade at the broker, so it counts against exposure and can be canceled.
OPEN_STATUSES = frozenset({S.PENDING_NEW, S.NEW, S.PARTIALLY_FILLED, S.PENDING_CANCEL, S.UNKNOWN})

_LIVE_EXITS = {S.PARTIALLY_FILLED, S.FILLED, S.PENDING_CANCEL, S.CANCELED, S.EXPIRED}

TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.PENDING_NEW: frozenset(
        {
            S.NEW,
            S.DENIED,
            S.REJECTED,
            S.UNKNOWN,
            S.PARTIALLY_FILLED,
            S.FILLED,
            S.CANCELED,
            S.EXPIRED,
            S.PENDING_CANCEL,
        }
    ),
    S.NEW: frozenset(_LIVE_EXITS),
    S.PARTIALLY_FILLED: frozenset(_LIVE_EXITS),
    # A fill can arrive after we asked to cancel; the cancel may also be refused (back to live).
    S.PENDING_CANCEL: frozenset({S.CANCELED, S.PARTIALLY_FILLED, S.FILLED, S.EXPIRED, S.NEW}),
    # Resolved by asking the broker: it either never saw the order or reports its real state.
    S.UNKNOWN: frozenset(
        {S.NEW, S.REJECTED, S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED, S.PENDING_CANCEL}
    ),
    S.FILLED: frozenset(),
    S.CANCELED: frozenset(),
    S.DENIED: frozenset(),
    S.REJECTED: frozenset(),
    S.EXPIRED: frozenset(),
}


def can_transition(current: OrderStatus, target: OrderStatus) -> bool:
    return target in TRANSITIONS[current]


def report_can_move(current: OrderStatus, reported: OrderStatus) -> bool:
    """Whether a broker's execution report in ``reported`` moves an order now in ``current``.
    A reported 'new' is the placement's acknowledgement: it never takes an order out of
    pending_cancel. Our cancel came after it, and the cancel's outcome arrives as its own
    report. The pending_cancel -> new edge is for a cancel the broker refused."""
    if reported is S.NEW and current is S.PENDING_CANCEL:
        return False
    return can_transition(current, reported)


def check_transition(current: OrderStatus, target: OrderStatus) -> None:
    """Raise ``InvalidTransition`` unless ``current -> target`` is legal."""
    if target not in TRANSITIONS[current]:
        raise InvalidTransition(f"illegal order transition {current.value} -> {target.value}")
