"""One exception hierarchy with stable, machine-readable codes.

Every error the gateway answers is a ``GatewayError``, answered as RFC 9457
``application/problem+json`` with its ``status`` and ``code`` (``app/http/problems.py``
holds the one table from exception class to answer):

    GatewayError                         400  gateway.error
    +-- RequestInvalid                   422  request.invalid (a body or query that does not parse)
    +-- PayloadTooLarge                  413  request.too_large
    +-- RequestHeadTooLarge              431  request.headers_too_large
    +-- RequestTimedOut                  408  request.timeout
    +-- HttpProblem                      4xx  http.<status> (unknown path, wrong method, ...)
    +-- NotAuthenticated                 401  auth.unauthenticated
    +-- Forbidden                        403  auth.forbidden
    +-- InvalidOrder                     422  order.invalid
    |   +-- UnknownSymbol                422  order.unknown_symbol
    +-- OrderNotFound                    404  order.not_found
    +-- SymbolNotFound                   404  symbol.not_found
    +-- OrderNotCancelable               409  order.not_cancelable
    +-- IdempotencyInFlight              409  idempotency.in_flight
    +-- IdempotencyConflict              422  idempotency.conflict
    +-- RiskDenied                     422  risk.<check> (RiskCode: the check that refused)
    +-- RiskUnavailable                  503  risk.unavailable
    +-- BrokerRejected                   422  broker.rejected
    +-- BrokerTimeout                    504  broker.timeout
    +-- BrokerUnavailable                503  broker.unavailable
    +-- BrokerCircuitOpen                503  broker.circuit_open (Retry-After)
    +-- PacingRateLimited                429  pacing.rate_limited (Retry-After)
    +-- RateLimited                      429  rate_limit.exceeded (an API key's own budget)
    +-- DependencyUnavailable            503  dependency.unavailable (Redis)
    |   +-- StorageUnavailable           503  storage.unavailable (the order log's database)
    +-- InternalError                    500  internal (a bug; logged)

``InvalidTransition`` is not among them: an order status change the state machine forbids
is a bug, never a client's error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class GatewayError(Exception):
    """Base of every error the gateway answers with a problem document."""

    status: int = 400
    code: str = "gateway.error"
    title: str = "Request failed"
    # HTTP headers the answer carries (e.g. WWW-Authenticate on a 401).
    headers: dict[str, str] = {}  # noqa: RUF012 - read only, replaced per class

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class RequestInvalid(GatewayError):
    status = 422
    code = "request.invalid"
    title = "Invalid request"


class PayloadTooLarge(GatewayError):
    status = 413
    code = "request.too_large"
    title = "Request body too large"


class RequestHeadTooLarge(GatewayError):
    status = 431
    code = "request.headers_too_large"
    title = "Request Header Fields Too Large"


class RequestTimedOut(GatewayError):
    status = 408
    code = "request.timeout"
    title = "Request Timeout"


class HttpProblem(GatewayError):
    """A routing-level HTTP error (unknown path, wrong method), as a problem document;
    ``headers`` as the router gave them (a 405's Allow)."""

    def __init__(self, status: int, detail: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.title = status, f"http.{status}", detail
        self.headers = dict(headers or {})


class DependencyUnavailable(GatewayError):
    status = 503
    code = "dependency.unavailable"
    title = "A backing service is unavailable"


class StorageUnavailable(DependencyUnavailable):
    code = "storage.unavailable"
    title = "The order log's database is unavailable"


class InternalError(GatewayError):
    status = 500
    code = "internal"
    title = "Internal error"


class InvalidOrder(GatewayError):
    status = 422
    code = "order.invalid"
    title = "Invalid order"


class UnknownSymbol(InvalidOrder):
    code = "order.unknown_symbol"
    title = "Unknown symbol"


class NotAuthenticated(GatewayError):
    status = 401
    code = "auth.unauthenticated"
    title = "Not authenticated"
    headers = {"WWW-Authenticate": "Bearer"}  # noqa: RUF012 - read only (RFC 9110 11.6.1)


class Forbidden(GatewayError):
    status = 403
    code = "auth.forbidden"
    title = "Forbidden"


class OrderNotFound(GatewayError):
    status = 404
    code = "order.not_found"
    title = "Order not found"


class SymbolNotFound(GatewayError):
    status = 404
    code = "symbol.not_found"
    title = "Symbol not traded here"


class OrderNotCancelable(GatewayError):
    status = 409
    code = "order.not_cancelable"
    title = "Order is already final"


class IdempotencyInFlight(GatewayError):
    status = 409
    code = "idempotency.in_flight"
    title = "A request with this idempotency key is still in flight"


class IdempotencyConflict(GatewayError):
    status = 422
    code = "idempotency.conflict"
    title = "Idempotency key reused with a different request"


class BrokerRejected(GatewayError):
    """The broker refused the order for a business reason; the order is stored as rejected."""

    status = 422
    code = "broker.rejected"
    title = "Broker rejected the order"


class BrokerTimeout(GatewayError):
    """The outcome is unknown; it is resolved by asking the broker, never by retrying."""

    status = 504
    code = "broker.timeout"
    title = "Broker did not answer in time; outcome unknown"


class BrokerUnavailable(GatewayError):
    status = 503
    code = "broker.unavailable"
    title = "Broker unavailable"


class _RetryLater(GatewayError):
    """Refused for now: ``Retry-After`` says when trying again may succeed. (Not drawn in
    the tree: a base of those that are, with no answer of its own.)"""

    def __init__(self, detail: str, retry_after_ms: int = 1000, **extra: Any) -> None:
        super().__init__(detail, retry_after_ms=retry_after_ms, **extra)
        self.retry_after_ms = retry_after_ms
        # Whole seconds (RFC 9110 10.2.3), never 0: a client must wait at least a moment.
        self.headers = {"Retry-After": str(max(1, -(-retry_after_ms // 1000)))}


class BrokerCircuitOpen(_RetryLater):
    """The broker is failing: the circuit breaker refuses calls without making them."""

    status = 503
    code = "broker.circuit_open"
    title = "Broker circuit open; the broker was not called"


class PacingRateLimited(_RetryLater):
    """The broker's rate limit (pacing) leaves no token within the caller's wait."""

    status = 429
    code = "pacing.rate_limited"
    title = "Broker rate limit reached; the broker was not called"


class RateLimited(_RetryLater):
    """The API key sent more requests of this class than its budget allows."""

    status = 429
    code = "rate_limit.exceeded"
    title = "Too many requests for this API key"

    def __init__(
        self,
        detail: str,
        retry_after_ms: int = 1000,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail, retry_after_ms, **extra)
        self.headers = {**self.headers, **(headers or {})}


class RiskDenied(GatewayError):
    """A pre-trade check refused the order. ``code`` names the check; the order is stored
    as denied with that code as its reason (rejected is the venue's refusal)."""

    status = 422
    title = "Denied by pre-trade risk checks"

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


class RiskUnavailable(GatewayError):
    """Risk state cannot be read: fail closed, nothing was reserved or placed."""

    status = 503
    code = "risk.unavailable"
    title = "Pre-trade risk checks unavailable; order not accepted"


def validation_errors(
    errors: Iterable[Mapping[str, Any]], prefix: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """Pydantic's errors as a problem's ``errors`` member: where, what, which kind."""
    return [
        {"loc": [*prefix, *e.get("loc", ())], "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in errors
    ]


class InvalidTransition(Exception):
    """An order status change the state machine forbids. A bug, never a client error."""
