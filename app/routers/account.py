"""Positions and the account summary."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from app.deps import PrincipalDep, ServicesDep
from app.domain.decimals import ExactDecimal
from app.domain.views import PositionView
from app.http.problems import problem_responses

router = APIRouter(prefix="/v1", tags=["account"])


class AccountView(BaseModel):
    account: str
    role: str
    open_orders: int
    positions: int
    gross_position_cost: ExactDecimal


@router.get("/positions", response_model=list[PositionView], responses=problem_responses())
async def list_positions(principal: PrincipalDep, services: ServicesDep) -> list[PositionView]:
    return [PositionView.of(p) for p in await services.orders.positions(principal.account)]


@router.get("/account", response_model=AccountView, responses=problem_responses())
async def get_account(principal: PrincipalDep, services: ServicesDep) -> AccountView:
    summary = await services.orders.account_summary(principal.account)
    return AccountView(
        account=summary.account,
        role=principal.role.value,
        open_orders=summary.open_orders,
        positions=summary.positions,
        gross_position_cost=summary.gross_position_cost,
    )
