"""Controls of the paper exchange (admin): move reference prices, close the session."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from app.deps import AdminDep, ServicesDep
from app.domain.decimals import ExactDecimal
from app.domain.instruments import check_price
from app.domain.orders import Price, Symbol
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
