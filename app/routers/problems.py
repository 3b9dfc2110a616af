"""Problem+json answers (RFC 9457): building them, and describing them in OpenAPI."""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError
from starlette.responses import Response

from app.domain.errors import DependencyUnavailable, GatewayError
from app.domain.views import PROBLEM_JSON, Problem, render_problem

log = logging.getLogger("ordergate")


def problem_response(error: GatewayError) -> Response:
    return Response(
        render_problem(error), error.status, headers=error.headers, media_type=PROBLEM_JSON
    )


def unavailable_response(exc: RedisError | DBAPIError) -> Response:
    """503 for a backing service that failed mid-request (nothing was done for Redis; the
    database's own transaction rolled back)."""
    if isinstance(exc, RedisError):
        log.warning("redis unavailable: %r", exc)
        return problem_response(
            DependencyUnavailable("Redis is unavailable; nothing was done", dependency="redis")
        )
    log.warning("database unavailable: %r", exc)
    return problem_response(
        DependencyUnavailable("the database is unavailable", dependency="database")
    )


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {"model": Problem, "content": {PROBLEM_JSON: {}}, "description": "problem"}
        for status in (401, 422, *statuses)
    }
