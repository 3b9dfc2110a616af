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
    burst: int
    window_s: int  # a full bucket's worth of requests refills in this long
    remaining: int
    full_in_s: int  # until the bucket is full again
    retry_after_ms: int  # refused: until a token is there

    def headers(self) -> dict[str, str]:
        """The IETF RateLimit fields (draft-ietf-httpapi-ratelimit-headers): the policy
        (quota ``q`` per window ``w`` seconds) and what is left of it (``r``, full again in
        ``t`` seconds)."""
        name = self.route_class.value
        return {
            "RateLimit-Policy": f'"{name}";q={self.burst};w={self.window_s}',
            "RateLimit": f'"{name}";r={self.remaining};t={self.full_in_s}',
        }


def window_s(rate: float, burst: int) -> int:
    return max(1, math.ceil(burst / rate))
