"""The execution reports: WebSocket ``/v1/stream`` (live, resumable) and their history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, WebSocket
from fastapi.responses import Response

from app.deps import PrincipalDep, Services, ServicesDep
from app.domain.executions import MAX_SEQ
from app.domain.views import ExecutionPage
from app.http.problems import problem_responses
from app.http.stream_socket import serve_stream

router = APIRouter(prefix="/v1", tags=["executions"])


@router.get("/executions", response_model=ExecutionPage, responses=problem_responses(403))
async def list_executions(
    principal: PrincipalDep,
    services: ServicesDep,
    since: Annotated[int, Query(ge=0, le=MAX_SEQ, description="reports after this seq")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    account: Annotated[str | None, Query(description="an admin's: whose reports")] = None,
) -> Response:
    """An account's execution reports after ``since``, oldest first: the stream's history."""
    items = await services.executions.history(principal, account, since, limit)
    next_since = since + len(items)  # an account's seqs have no gaps
    body = f'{{"items":[{",".join(items)}],"next_since":{next_since}}}'
    return Response(body, media_type="application/json")


@router.websocket("/stream")
async def stream(websocket: WebSocket) -> None:
    services: Services = websocket.app.state.services
    settings = services.settings.stream
    await serve_stream(
        websocket, services.executions, settings.allowed_origins, settings.auth_timeout_s
    )
