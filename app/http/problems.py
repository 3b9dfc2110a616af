"""Every error answer, RFC 9457 problem+json: one table from exception class to answer,
looked up along the exception's class hierarchy (as Starlette looks up its exception
handlers), used by the FastAPI app and by the order entry fast path alike.

    GatewayError (app.domain.errors: the tree, each code's status)  its own problem
    RequestValidationError (FastAPI: a request that does not parse) 422 request.invalid
    HTTPException (Starlette: unknown path, wrong method)           its status, http.<status>
    RedisError                                                      503 dependency.unavailable
    DBAPIError                                                      503 storage.unavailable
    Exception (anything else: a bug)                                500 internal, logged
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi.exceptions import RequestValidationError
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from app.domain.errors import (
    DependencyUnavailable,
    GatewayError,
    HttpProblem,
    InternalError,
    RequestInvalid,
    StorageUnavailable,
    validation_errors,
)
from app.domain.views import PROBLEM_JSON, Problem, render_problem
from app.services.metrics import ERRORS

log = logging.getLogger("ordergate")


def problem_response(error: GatewayError) -> Response:
    ERRORS.labels(error.code).inc()
    return Response(
        render_problem(error), error.status, headers=error.headers, media_type=PROBLEM_JSON
    )


def _gateway_error(exc: Exception) -> GatewayError:
    assert isinstance(exc, GatewayError)
    return exc


def _invalid_request(exc: Exception) -> GatewayError:
    assert isinstance(exc, RequestValidationError)
    return RequestInvalid("the request is not valid", errors=validation_errors(exc.errors()))


def _http_error(exc: Exception) -> GatewayError:
    assert isinstance(exc, HTTPException)
    return HttpProblem(exc.status_code, str(exc.detail), exc.headers)


def _redis_down(exc: Exception) -> GatewayError:
    # Nothing was done: every write to Redis is one atomic script or none.
    log.warning("redis unavailable: %r", exc)
    return DependencyUnavailable("Redis is unavailable; nothing was done", dependency="redis")


def _database_down(exc: Exception) -> GatewayError:
    # The database's own transaction rolled back.
    log.warning("database unavailable: %r", exc)
    return StorageUnavailable("the order log's database is unavailable")


def _bug(exc: Exception) -> GatewayError:
    log.error("unhandled error", exc_info=exc)
    return InternalError("internal error; it has been logged")


ERROR_TABLE: dict[type[Exception], Callable[[Exception], GatewayError]] = {
    GatewayError: _gateway_error,
    RequestValidationError: _invalid_request,
    HTTPException: _http_error,
    RedisError: _redis_down,
    DBAPIError: _database_down,
    Exception: _bug,
}


def error_response(exc: Exception) -> Response:
    """The answer to ``exc``: the table's entry for its nearest class."""
    for cls in type(exc).__mro__:
        entry = ERROR_TABLE.get(cls)
        if entry is not None:
            return problem_response(entry(exc))
    raise exc  # a BaseException that is not an Exception: not an error to answer


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {"model": Problem, "content": {PROBLEM_JSON: {}}, "description": "problem"}
        for status in (401, 422, *statuses)
    }
