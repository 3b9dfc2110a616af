"""Risk controls: limits per account, kill switches, the live risk state."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from fastapi import APIRouter, Body, Path, Query
from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from app.deps import AdminDep, PrincipalDep, ServicesDep
from app.domain.accounts import ACCOUNT_PATTERN
from app.domain.decimals import ExactDecimal
from app.domain.errors import Forbidden
from app.domain.exposure import RiskSnapshot
from app.domain.orders import Side
from app.domain.risk import RiskLimits, TradingState
from app.domain.views import Timestamp
from app.http.bodies import ExactJsonRoute
from app.http.problems import problem_responses
from app.services.auth import Principal, Role

router = APIRouter(prefix="/v1/risk", tags=["risk"], route_class=ExactJsonRoute)

Account = Annotated[str, Path(pattern=ACCOUNT_PATTERN)]


def _may_read(principal: Principal, account: str) -> None:
    if principal.role is not Role.ADMIN and principal.account != account:
        raise Forbidden("only an admin may see another account's risk")


@router.get("/limits/{account}", response_model=RiskLimits, responses=problem_responses(403))
async def get_limits(
    account: Account, principal: PrincipalDep, services: ServicesDep
) -> RiskLimits:
    """The account's limits (its own, else the configured defaults). Admins see any
    account; others their own."""
    _may_read(principal, account)
    return await services.risk_controls.limits(account)


@router.put("/limits/{account}", response_model=RiskLimits, responses=problem_responses(403))
async def put_limits(
    account: Account, limits: RiskLimits, principal: AdminDep, services: ServicesDep
) -> RiskLimits:
    """Replace the account's limits; an absent or null field means no limit. Every worker
    applies them to its next order."""
    return await services.risk_controls.set_limits(principal.actor, account, limits)


@router.patch("/limits/{account}", response_model=RiskLimits, responses=problem_responses(403))
async def patch_limits(
    account: Account,
    patch: Annotated[
        dict[str, Any], Body(examples=[{"max_order_qty": "500", "max_position": None}])
    ],
    principal: AdminDep,
    services: ServicesDep,
) -> RiskLimits:
    """Change only the limits named, as a JSON merge patch (RFC 7396): a value sets that
    limit, null removes it (no limit); in `symbols`, null removes a symbol's override. The
    rest stay as they are. Answers the account's limits after the change."""
    return await services.risk_controls.patch_limits(principal.actor, account, patch)


class KillSwitchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scope: Literal["global", "account"]
    account: Annotated[str, Field(pattern=ACCOUNT_PATTERN)] | None = None
    active: StrictBool
    cancel_open: StrictBool = True

    @model_validator(mode="after")
    def _account_matches_scope(self) -> Self:
        if (self.scope == "account") != (self.account is not None):
            raise ValueError("account is required for scope 'account', and only for it")
        return self


class KillSwitchOutcomeView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    scope: str
    account: str | None
    active: bool
    generation: int
    canceled_orders: int
    at: Timestamp
    by: str


@router.post("/kill-switch", response_model=KillSwitchOutcomeView, responses=problem_responses(403))
async def kill_switch(
    request: KillSwitchRequest, principal: AdminDep, services: ServicesDep
) -> KillSwitchOutcomeView:
    """Stop risk-increasing orders (globally or for one account) and, with cancel_open,
    cancel open orders; those still being placed as it trips are canceled once their
    placements have settled (`canceled_orders` counts the first sweep only). Orders that
    reduce a position still pass. Audited."""
    outcome = await services.risk_controls.set_kill_switch(
        principal.actor, request.scope, request.account, request.active, request.cancel_open
    )
    return KillSwitchOutcomeView.model_validate(outcome)


class ExposureView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    symbol: str
    position: ExactDecimal
    open_buy: ExactDecimal
    open_sell: ExactDecimal
    mark: ExactDecimal
    worst_case_notional: ExactDecimal


class ReservationView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    client_order_id: str
    symbol: str
    side: Side
    qty: ExactDecimal
    filled: ExactDecimal
    reserved_at_ms: int


class AccountRiskView(BaseModel):
    account: str
    loaded: bool
    trading_state: TradingState | None
    kill_switch: bool
    global_kill_switch: bool
    gross_notional: ExactDecimal
    open_orders: int
    exposure: list[ExposureView]
    reservations: list[ReservationView]

    @classmethod
    def of(cls, s: RiskSnapshot) -> AccountRiskView:
        return cls(
            account=s.account,
            loaded=s.built,
            trading_state=None if s.limits is None else s.limits.trading_state,
            kill_switch=s.kill_account,
            global_kill_switch=s.kill_global,
            gross_notional=s.gross_notional,
            open_orders=len(s.reservations),
            exposure=[ExposureView.model_validate(e) for e in s.exposure],
            reservations=[ReservationView.model_validate(r) for r in s.reservations],
        )


class KillSwitchStateView(BaseModel):
    scope: str
    account: str | None
    active: bool
    updated_at: Timestamp
    updated_by: str


class RiskStateView(BaseModel):
    kill_switches: list[KillSwitchStateView]
    accounts: list[AccountRiskView]


@router.get("/state", response_model=RiskStateView, responses=problem_responses(403))
async def risk_state(
    principal: PrincipalDep,
    services: ServicesDep,
    account: Annotated[str | None, Query(max_length=64)] = None,
) -> RiskStateView:
    """Kill switches, trading states, exposure and reservations per account, as the risk
    checks see them now. Admins see every account, or `account`; others their own."""
    if account is not None:
        _may_read(principal, account)
    elif principal.role is not Role.ADMIN:
        account = principal.account
    state = await services.risk_controls.state(None if account is None else {account})
    visible = [
        k for k in state.kill_switches if k.scope == "global" or account in (None, k.account)
    ]
    return RiskStateView(
        kill_switches=[
            KillSwitchStateView(
                scope=k.scope,
                account=k.account or None,
                active=k.active,
                updated_at=k.updated_at,
                updated_by=k.updated_by,
            )
            for k in visible
        ],
        accounts=[AccountRiskView.of(s) for s in state.accounts],
    )


class AuditEntryView(BaseModel):
    id: int
    at: Timestamp
    actor: str
    action: str
    scope: str
    account: str
    detail: dict[str, Any]


@router.get("/audit", response_model=list[AuditEntryView], responses=problem_responses(403))
async def audit_trail(
    _: AdminDep, services: ServicesDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[AuditEntryView]:
    """Every change of limits and kill switches, newest first: who, when, what."""
    return [AuditEntryView(**entry) for entry in await services.risk_controls.audit_trail(limit)]
