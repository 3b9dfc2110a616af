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

    @staticmethod
    def order(account: str, client_order_id: str) -> str:
        return f"{{sim}}:o:{account}:{client_order_id}"
