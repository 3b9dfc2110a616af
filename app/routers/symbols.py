"""The symbols traded here: reference prices and how finely each trades."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from app.deps import PrincipalDep, ServicesDep
from app.domain.decimals import ExactDecimal
from app.http.problems import problem_responses

router = APIRouter(prefix="/v1", tags=["symbols"])


class SymbolView(BaseModel):
    symbol: str
    reference_price: ExactDecimal | None
    price_decimals: int
    qty_decimals: int


@router.get("/symbols", response_model=list[SymbolView], responses=problem_responses())
async def list_symbols(_: PrincipalDep, services: ServicesDep) -> list[SymbolView]:
    """Every tradable symbol: its reference price (the last trade, else the configured
    price), and the decimal places its prices and quantities may have."""
    return [
        SymbolView(
            symbol=q.instrument.symbol,
            reference_price=q.reference_price,
            price_decimals=q.instrument.price_decimals,
            qty_decimals=q.instrument.qty_decimals,
        )
        for q in services.symbols.quotes()
    ]
