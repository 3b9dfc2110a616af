"""What protects the broker: pacing (token buckets per endpoint) and a circuit breaker.

Pure types; the state lives in Redis (``app/storage/redis/broker_guard.py``) so that every
worker and replica shares one budget and one view of the broker's health.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Endpoint(StrEnum):
    """A broker's rate-limited kinds of request (Interactive Brokers' names)."""

    RT_MARKETDATA = "rt_marketdata"
    HISTORICAL_DATA = "historical_data"
    ORDER_PLACEMENT = "order_placement"
    ACCOUNT_DATA = "account_data"
    EXECUTIONS = "executions"


class CallOutcome(StrEnum):
    SUCCESS = "success"  # the broker answered (a business reject included)
    FAILURE = "failure"  # a timeout or a transport error
    UNUSED = "unused"  # admitted, but never made


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class PacingRule:
    """``rate`` requests per second on average, ``burst`` at once from a full bucket."""

    rate: float
    burst: int


# Interactive Brokers' limits (its API's 50 messages/s in all, ib_async's default 45/s;
# historical data 60 requests per 10 minutes): the default profile.
INTERACTIVE_BROKERS_PACING: dict[Endpoint, PacingRule] = {
    Endpoint.RT_MARKETDATA: PacingRule(50, 100),
    Endpoint.HISTORICAL_DATA: PacingRule(0.1, 60),
    Endpoint.ORDER_PLACEMENT: PacingRule(40, 50),
    Endpoint.ACCOUNT_DATA: PacingRule(1, 5),
    Endpoint.EXECUTIONS: PacingRule(10, 20),
}


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """``failure_threshold`` consecutive failures open the breaker; after ``open_s`` it lets
    ``half_open_trials`` trial calls through; all succeeding closes it, one failing
    reopens it."""

    failure_threshold: int = 5
    open_s: float = 60.0
    half_open_trials: int = 3


@dataclass(frozen=True, slots=True)
class BucketView:
    endpoint: Endpoint
    rate: float
    burst: int
    tokens: float  # now; below zero: callers booked and waiting
    queued: int  # callers waiting for a token now
    taken: int  # calls that found a token at once
    waited: int  # calls that waited for one
    throttled: int  # calls refused: their wait would have passed their deadline


@dataclass(frozen=True, slots=True)
class BreakerView:
    broker: str
    state: BreakerState
    consecutive_failures: int
    trials_admitted: int
    trials_succeeded: int
    retry_after_ms: int  # open: until it goes half-open
    times_opened: int
    times_closed: int
