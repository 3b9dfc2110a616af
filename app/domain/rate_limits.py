"""Inbound API rate limits: each API key's budget per class of routes (pure types)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


class RouteClass(StrEnum):
    ORDER_ENTRY = "order_entry"  # POST /v1/orders
    CANCELS = "cancels"  # DELETE /v1/orders, /v1/orders/{id}
    QUERIES = "queries"  # everything else


def route_class(method: str, path: str) -> RouteClass:
    if method == "DELETE":
        return RouteClass.CANCELS
    if method == "POST" and path.rstrip("/") == "/v1/orders":
        return RouteClass.ORDER_ENTRY
    return RouteClass.QUERIES


@dataclass(frozen=True, slots=True)
class RateLimitDecision:
    route_class: RouteClass
    allowed: bool
    quota: int  # requests per window, on average
    window_s: int
    remaining: int
    full_in_s: int  # until the bucket is full again
    retry_after_ms: int  # refused: until a token is there

    def headers(self) -> dict[str, str]:
        """The IETF RateLimit fields (draft-ietf-httpapi-ratelimit-headers): the policy
        (quota ``q`` per window ``w`` seconds) and what is left of it (``r``, full again in
        ``t`` seconds)."""
        name = self.route_class.value
        return {
            "RateLimit-Policy": f'"{name}";q={self.quota};w={self.window_s}',
            "RateLimit": f'"{name}";r={self.remaining};t={self.full_in_s}',
        }


def policy(rate: float, burst: int) -> tuple[int, int]:
    """A token bucket as a quota per window: the window a full bucket takes to refill
    (whole seconds), the quota what the rate gives in it (rate 40, burst 50: 80 per 2 s)."""
    window = max(1, math.ceil(burst / rate))
    return max(burst, math.floor(rate * window)), window
