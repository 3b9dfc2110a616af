"""The broker boundary: what the gateway needs from any venue, simulated or real."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from app.domain.orders import ExecutionReport, Order
from app.domain.status import OrderStatus


class BrokerTransportError(Exception):
    """The request may not have reached the broker (connection refused, reset, ...)."""


@dataclass(frozen=True, slots=True)
class PlacementAck:
    """The broker's answer to a placement: accepted (status new) or a business reject."""

    accepted: bool
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class CancelAck:
    """``canceled`` True when the broker canceled it; else its status at the broker (None:
    the broker does not know the order). ``cum_qty``: what the broker had filled when it
    canceled, its last word on the order (FIX CumQty on the cancel's report); None when
    the broker does not say, and then only its final execution report ends the order's
    reservation."""

    canceled: bool
    broker_status: OrderStatus | None
    cum_qty: Decimal | None = None


@dataclass(frozen=True, slots=True)
class ReportBatch:
    """Reports after a cursor, and the cursor after them. ``restarted``: the venue's report
    stream began anew since that cursor (the venue lost its state, e.g. its Redis came back
    empty), so orders it held may be gone from it."""

    reports: list[ExecutionReport]
    cursor: str
    restarted: bool = False


# One order's part of a batch placement: its answer, or the transport error that kept it
# from the broker.
PlacementResult = PlacementAck | BrokerTransportError


class Broker(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise if the broker cannot be reached."""

    async def place(self, order: Order) -> PlacementAck: ...

    async def place_many(self, orders: Sequence[Order]) -> list[PlacementResult]:
        """Place several orders in one request where the broker allows it (a batch); per
        order, in the orders' order, its answer or the transport error that kept that order
        from the broker. Raises BrokerTransportError when the request as a whole failed."""

    async def cancel(self, order: Order) -> CancelAck: ...

    async def cancel_many(self, orders: Sequence[Order]) -> list[CancelAck]:
        """Cancel several orders in one request where the broker allows it (a mass
        cancel); answers in the orders' order."""

    async def statuses(self, orders: Sequence[Order]) -> list[OrderStatus | None]:
        """Each order's status at the broker (None: never received), in one request
        (what reconciliation asks: an open and completed orders query at a real broker)."""

    async def read_reports(self, cursor: str | None, *, block_ms: int, count: int) -> ReportBatch:
        """Execution reports after ``cursor`` (None: from the start), in broker order."""

    async def housekeeping(self) -> None:
        """Periodic venue work (the paper exchange matches resting orders here)."""
