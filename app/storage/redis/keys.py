"""Every Redis key name the gateway uses, in one place.

Account keys carry the account as a hash tag (``{acct}``) so that a Lua script touching one
account's keys stays in one Redis Cluster slot. The paper exchange keeps all of its state
under the single tag ``{sim}``: it is one venue, and its scripts touch its whole book.
"""

from __future__ import annotations


def idempotency(account: str, key: str) -> str:
    return f"og:{{{account}}}:idem:{key}"


def leader(role: str) -> str:
    return f"og:leader:{role}"


class SimKeys:
    """Keys of the simulated paper exchange that Python touches; its book and day-order set
    are named inside ``app/brokers/lua/sim_common.lua``, under the same ``{sim}`` tag."""

    prices = "{sim}:px"
    epoch = "{sim}:epoch"
    reports = "{sim}:exec"
    faults = "{sim}:faults"  # injected at run time (PUT /v1/sim/broker)
    fail_next = "{sim}:fail_next"
    stats = "{sim}:stats"

    @staticmethod
    def order(account: str, client_order_id: str) -> str:
        return f"{{sim}}:o:{account}:{client_order_id}"


class RiskKeys:
    """One account's pre-trade risk state; all under the account's hash tag (one slot)."""

    limits_channel = "og:risk:limits"  # pub/sub: an account's limits changed

    def __init__(self, account: str) -> None:
        self.state = f"og:{{{account}}}:risk"
        self.exposure = f"og:{{{account}}}:expo"
        self.reservations = f"og:{{{account}}}:resv"
        self._dup_prefix = f"og:{{{account}}}:dup:"
        self._gone_prefix = f"og:{{{account}}}:gone:"

    @property
    def all(self) -> list[str]:
        return [self.state, self.exposure, self.reservations]

    def duplicate(self, signature: str) -> str:
        return self._dup_prefix + signature

    def tombstone(self, attempt: str) -> str:
        """Marks a reservation attempt the gateway gave up on (see risk_abandon.lua)."""
        return self._gone_prefix + attempt

    @staticmethod
    def state_pattern() -> str:
        return "og:{*}:risk"


# Last trade price per symbol (market data, or the paper exchange's price moves). A plain
# hash: read by every worker's reference-price cache.
LAST_TRADES = "og:md:last"


class MarketDataKeys:
    """The market-data pipeline: ticks as they arrive, the processor's state, what it
    publishes, and the signal worker's output. One venue-wide feed, so no hash tags (a
    cluster deployment would tag them ``{md}``)."""

    raw = "og:md:raw"  # stream: ticks as they arrived, unchecked
    events = "og:md:events"  # stream: checked ticks and completed bars, a batch per entry
    dead = "og:md:dead"  # stream: ticks that failed a check, with the reason
    dead_counts = "og:md:dead:counts"  # hash: reason -> ticks
    processor = "og:md:proc"  # hash: @cursor (last raw entry processed), symbol -> state
    signals = "og:signals"  # stream: each signal cycle's values
    signals_latest = "og:signals:latest"  # hash: symbol -> its latest values

    last_bars = "og:md:lastbar"  # hash: symbol -> its last completed bar
    bar_minutes = "og:md:minutes"  # zset: the minutes (starts) with completed bars kept

    @staticmethod
    def bars(start_us: int) -> str:
        """One minute's completed bars: hash, symbol -> bar."""
        return f"og:md:bars:{start_us}"


class BrokerGuardKeys:
    """One broker's pacing buckets and circuit breaker, under the broker's hash tag (one
    slot: a script checks the breaker and takes a token in one step)."""

    def __init__(self, broker: str) -> None:
        self.breaker = f"og:{{broker:{broker}}}:breaker"
        self._bucket_prefix = f"og:{{broker:{broker}}}:pace:"

    def bucket(self, endpoint: str) -> str:
        return self._bucket_prefix + endpoint


def inbound_bucket(key_id: str, route_class: str) -> str:
    """An API key's request budget for one class of routes."""
    return f"og:{{key:{key_id}}}:rl:{route_class}"


class StreamKeys:
    """The execution report streams, one per account (entry id: the report's seq), each
    hub's wake-up stream, and the publisher's."""

    @staticmethod
    def executions(account: str) -> str:
        return f"og:{{{account}}}:exec"

    @staticmethod
    def held(account: str) -> str:
        """Reports that reached Redis before the ones numbered ahead of them."""
        return f"og:{{{account}}}:exec:held"

    @staticmethod
    def account_of(key: str) -> str:
        return key[len("og:{") : -len("}:exec")]

    @staticmethod
    def wake(hub: str) -> str:
        return f"og:exec:wake:{hub}"

    # An entry per commit that wrote order events: what the execution publisher waits on.
    committed = "og:exec:committed"
