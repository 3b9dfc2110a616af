"""Market data: ticks from an outside feed, and each symbol's last trade and bars; the
signal worker's latest values."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from app.deps import AdminDep, PrincipalDep, ServicesDep
from app.domain.decimals import ExactDecimal
from app.domain.errors import RequestInvalid
from app.domain.marketdata import MAX_TICK_PRICE
from app.domain.orders import Symbol
from app.http.bodies import ExactJsonRoute
from app.http.problems import problem_responses

router = APIRouter(prefix="/v1", tags=["market data"], route_class=ExactJsonRoute)


# A tick's numbers are checked by the processor (a price not positive, say, is a dead
# letter); what no feed could mean is refused here, before anything is taken in.
TickNumber = Annotated[
    ExactDecimal,
    Field(ge=-MAX_TICK_PRICE, le=MAX_TICK_PRICE, max_digits=30, decimal_places=12),
]


class TickIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    symbol: Annotated[str, Field(min_length=1, max_length=32)]
    price: TickNumber
    size: TickNumber
    time: AwareDatetime = Field(description="when it traded: ISO 8601 with a zone")


class TickBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ticks: Annotated[list[TickIn], Field(min_length=1)]


class TicksAccepted(BaseModel):
    accepted: int


@router.post(
    "/marketdata/ticks",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TicksAccepted,
    responses=problem_responses(403, 429),
)
async def post_ticks(batch: TickBatch, _: AdminDep, services: ServicesDep) -> TicksAccepted:
    """Take a batch of trades from an outside feed (an admin key). Each batch takes a
    token of the ``rt_marketdata`` bucket. A tick that fails a check later (price not
    positive, unknown symbol, time before the symbol's last tick) goes to the dead-letter
    stream with its reason; the others become last trades and bars."""
    limit = services.settings.marketdata.max_ticks_per_request
    if len(batch.ticks) > limit:
        raise RequestInvalid(f"at most {limit} ticks per request, got {len(batch.ticks)}")
    accepted = await services.marketdata.take(
        [
            (t.symbol, format(t.price, "f"), format(t.size, "f"), _micros(t.time))
            for t in batch.ticks
        ]
    )
    return TicksAccepted(accepted=accepted)


def _micros(moment: datetime) -> int:
    return round(moment.timestamp() * 1_000_000)


@router.get("/marketdata/dead-letters", responses=problem_responses(403))
async def dead_letters(
    _: AdminDep,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Ticks that failed a check: how many for each reason, and the newest ones."""
    counts, newest = await services.marketdata_queries.dead_letters(limit)
    return {"counts": counts, "newest": newest}


@router.get("/marketdata/{symbol}", responses=problem_responses(404))
async def get_marketdata(
    symbol: Annotated[Symbol, Path()], _: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """The symbol's last trade (its reference price from then on), its forming 1-minute
    bar and the last completed one."""
    return await services.marketdata_queries.symbol_view(symbol)


@router.get("/signals/latest", responses=problem_responses())
async def latest_signals(_: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    """Every symbol's latest signal values: the composite, each raw signal and each
    orthogonalized one (null where a symbol lacks the history)."""
    return {"signals": await services.signals.latest()}


@router.get("/signals/{symbol}", responses=problem_responses(404))
async def symbol_signals(
    symbol: Annotated[Symbol, Path()], _: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """One symbol's latest signal values."""
    return await services.signals.of_symbol(symbol)
