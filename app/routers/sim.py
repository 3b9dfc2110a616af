"""Controls of the paper exchange (admin): move reference prices, close the session, inject
faults at run time."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from app.brokers.simulated import SimFaults, SimFaultState
from app.deps import AdminDep, ServicesDep
from app.domain.decimals import ExactDecimal
from app.domain.instruments import check_price
from app.domain.orders import Price, Symbol
from app.domain.risk import Count
from app.http.bodies import ExactJsonRoute
from app.http.problems import problem_responses

router = APIRouter(prefix="/v1/sim", tags=["paper exchange"], route_class=ExactJsonRoute)


class PriceUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    symbol: Symbol
    price: Price


class MatchResult(BaseModel):
    symbol: str
    price: ExactDecimal
    matched_orders: int


class SessionCloseResult(BaseModel):
    expired_orders: int


@router.post("/prices", response_model=MatchResult, responses=problem_responses(403))
async def set_reference_price(
    update: PriceUpdate, _: AdminDep, services: ServicesDep
) -> MatchResult:
    """Move a symbol's reference price; resting orders it crosses fill."""
    check_price("price", update.price, services.symbols.get(update.symbol))
    # The paper exchange's price moves are this deployment's market data: the last trade.
    await services.risk.prices.record_last_trade(update.symbol, update.price)
    matched = await services.broker.set_reference_price(update.symbol, update.price)
    return MatchResult(symbol=update.symbol, price=update.price, matched_orders=matched)


@router.post("/session-close", response_model=SessionCloseResult, responses=problem_responses(403))
async def close_session(_: AdminDep, services: ServicesDep) -> SessionCloseResult:
    """End the trading day: resting day orders expire."""
    return SessionCloseResult(expired_orders=await services.broker.close_session())


# JSON numbers arrive as exact decimals (the route's parser), as every amount does.
Millis = Annotated[ExactDecimal, Field(ge=0, le=60_000, allow_inf_nan=False)]
Share = Annotated[ExactDecimal, Field(ge=0, le=1, allow_inf_nan=False)]


class BrokerFaults(BaseModel):
    """The paper exchange's faults. PUT replaces them all: a field left out takes its
    configured value (``sim.*`` settings), ``fail_next`` 0."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: Millis | None = Field(None, description="one-way latency")
    latency_jitter_ms: Millis | None = None
    answer_delay_ms: Millis | None = Field(
        None, description="placed, but the answer comes this much later"
    )
    reject_rate: Share | None = Field(None, description="share rejected")
    fail_rate: Share | None = Field(
        None, description="share of placement and cancel requests failing unsent"
    )
    timeout_rate: Share | None = Field(None, description="share that hang")
    fail_next: Annotated[Count, Field(ge=0, le=1_000_000)] = Field(
        0, description="the next N placements fail"
    )


class BrokerFaultsOut(BaseModel):
    latency_ms: float
    latency_jitter_ms: float
    answer_delay_ms: float
    reject_rate: float
    fail_rate: float
    timeout_rate: float
    fail_next: int
    placements: int
    failed_by_fail_next: int
    place_requests: int
    cancel_requests: int
    status_requests: int

    @classmethod
    def of(cls, state: SimFaultState) -> BrokerFaultsOut:
        return cls(
            **asdict(state.faults),
            fail_next=state.fail_next,
            placements=state.placements,
            failed_by_fail_next=state.failed,
            place_requests=state.place_requests,
            cancel_requests=state.cancel_requests,
            status_requests=state.status_requests,
        )


@router.put("/broker", response_model=BrokerFaultsOut, responses=problem_responses(403))
async def set_broker_faults(
    faults: BrokerFaults, _: AdminDep, services: ServicesDep
) -> BrokerFaultsOut:
    """Inject latency, rejects, transport failures and timeouts into the paper exchange,
    for every worker (within 0.2 s; ``fail_next`` at once, counted exactly)."""
    configured = asdict(SimFaults.of(services.settings.sim))
    given = faults.model_dump(exclude={"fail_next"}, exclude_none=True)
    chosen = SimFaults(**{**configured, **{name: float(v) for name, v in given.items()}})
    await services.broker.set_faults(chosen, faults.fail_next)
    return BrokerFaultsOut.of(await services.broker.fault_state())


@router.get("/broker", response_model=BrokerFaultsOut, responses=problem_responses(403))
async def get_broker_faults(_: AdminDep, services: ServicesDep) -> BrokerFaultsOut:
    """The paper exchange's faults now, and its placement counts."""
    return BrokerFaultsOut.of(await services.broker.fault_state())
