"""Locust users of a gateway: traders and execution-stream subscribers.

Point it at any gateway: ``locust -f loadtests/locustfile.py --host http://gateway:8000`` with
``ORDERGATE_LOADTEST_KEYS`` (comma-separated trader API keys; each user takes one in turn)
in the environment. ``make loadtest`` starts a gateway of its own and runs this headless
(``loadtests/run.py``).

- ``Trader`` (FastHttpUser, ``ORDERGATE_LOADTEST_ORDERS_PER_USER`` orders a second each, by
  ``constant_throughput``): mostly market orders, some day limit orders far from the market
  (they rest), cancels of its resting orders, and queries of an order and of the open
  orders. Every order carries a client_order_id. Locust waits for each answer before the
  next request, so a slow answer delays the next send: each order is also recorded from
  its *intended* send time (``POST /v1/orders from intended send``), which is what a client
  sending at a fixed rate would see.
- ``Subscriber`` (``ORDERGATE_LOADTEST_SUBSCRIBERS`` of them, default 2): follows the
  stream of one trader key's account and records each fill's latency, from the send time
  the order's client_order_id carries to the fill's arrival, as ``WS fill``.

At the end (``events.quitting``) the run fails, exit code 1, when the orders' P95 is over
``ORDERGATE_LOADTEST_SLA_MS`` (200) or more than 0.1% of requests failed.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import secrets
import threading
import time
from typing import Any

import websocket  # websocket-client: blocking sockets, which gevent makes cooperative
from locust import FastHttpUser, User, constant_throughput, events, task

ORDERS = "POST /v1/orders"
FROM_INTENDED = "POST /v1/orders from intended send"
SLA_MS = float(os.environ.get("ORDERGATE_LOADTEST_SLA_MS", "200"))
MAX_FAILURE_RATIO = 0.001
SYMBOLS = ["AAPL", "MSFT", "AMZN", "GOOGL", "NVDA", "SPY", "QQQ", "META", "TSLA", "JPM"]

_keys = [k for k in os.environ.get("ORDERGATE_LOADTEST_KEYS", "").split(",") if k]
_next_key = itertools.cycle(_keys or [""])
_key_lock = threading.Lock()
log = logging.getLogger("loadtest")


def _take_key() -> str:
    with _key_lock:
        return next(_next_key)


def _client_order_id(sent_ns: int) -> str:
    """The send time rides in the id, so the stream's subscriber can time the fill."""
    return f"lt{sent_ns}-{secrets.token_hex(3)}"


class Trader(FastHttpUser):
    orders_per_s = float(os.environ.get("ORDERGATE_LOADTEST_ORDERS_PER_USER", "10"))
    # Tasks are picked by weight; a pick is one request, paced to orders_per_s requests a
    # second (orders are 8 of every 11 requests).
    wait_time = constant_throughput(orders_per_s * 11 / 8)

    def on_start(self) -> None:
        self.key = _take_key()
        self.headers = {"Authorization": f"Bearer {self.key}"}
        self.resting: list[str] = []
        self.interval_s = 1 / (self.orders_per_s * 11 / 8)
        self.started = time.monotonic()
        self.requests = 0

    def _due(self) -> float:
        """When this request was due on the fixed schedule: the k-th ``interval_s`` after
        the start, however late earlier answers came. Locust never catches up after a
        stall, so from then on every request counts the stall: the full cost a client
        sending at a fixed rate would have seen (coordinated omission, corrected)."""
        due = self.started + self.requests * self.interval_s
        self.requests += 1
        return due

    def _order(self, body: dict[str, Any]) -> dict[str, Any] | None:
        due = self._due()
        sent_ns = time.time_ns()
        body["client_order_id"] = _client_order_id(sent_ns)
        with self.client.post(
            "/v1/orders", json=body, headers=self.headers, name=ORDERS, catch_response=True
        ) as response:
            if response.status_code != 201:
                response.failure(f"{response.status_code}: {response.text[:200]}")
                return None
            events.request.fire(
                request_type="POST",
                name=FROM_INTENDED,
                response_time=(time.monotonic() - due) * 1000,
                response_length=0,
                exception=None,
                context={},
            )
            order: dict[str, Any] = response.json()
            return order

    @task(6)
    def market_order(self) -> None:
        side = random.choice(("buy", "sell"))  # positions stay near flat
        self._order({"symbol": random.choice(SYMBOLS), "side": side, "qty": "1",
                     "type": "market", "allow_duplicate": True})  # fmt: skip

    @task(2)
    def resting_limit_order(self) -> None:
        # Far below any reference price: it rests until canceled.
        order = self._order({"symbol": random.choice(SYMBOLS), "side": "buy", "qty": "1",
                             "type": "limit", "limit_price": "1.00", "time_in_force": "day",
                             "allow_duplicate": True})  # fmt: skip
        if order is not None:
            self.resting.append(order["id"])

    @task(1)
    def cancel(self) -> None:
        self._due()
        if not self.resting:
            return
        order_id = self.resting.pop(0)
        self.client.delete(
            f"/v1/orders/{order_id}", headers=self.headers, name="DELETE /v1/orders/{id}"
        )

    @task(1)
    def query_order(self) -> None:
        self._due()
        if self.resting:
            self.client.get(f"/v1/orders/{self.resting[-1]}", headers=self.headers,
                            name="GET /v1/orders/{id}")  # fmt: skip

    @task(1)
    def list_open_orders(self) -> None:
        self._due()
        self.client.get("/v1/orders", params={"status": "new", "limit": "20"},
                        headers=self.headers, name="GET /v1/orders")  # fmt: skip


class Subscriber(User):
    fixed_count = int(os.environ.get("ORDERGATE_LOADTEST_SUBSCRIBERS", "2"))

    def on_start(self) -> None:
        url = self.host.replace("http://", "ws://").replace("https://", "wss://") + "/v1/stream"
        started = time.monotonic()
        try:
            # No Origin header: it is no browser (the gateway refuses origins not allowed).
            self.socket = websocket.create_connection(
                url, header=[f"Authorization: Bearer {_take_key()}"], timeout=30,
                suppress_origin=True,
            )  # fmt: skip
            self.socket.send(json.dumps({"op": "subscribe", "channels": ["executions"]}))
        except Exception as exc:  # counted against the run, not only logged
            waited_ms = (time.monotonic() - started) * 1000
            events.request.fire(
                request_type="WS", name="connect", response_time=waited_ms,
                response_length=0, exception=exc, context={},
            )  # fmt: skip
            raise

    def on_stop(self) -> None:
        self.socket.close()

    @task
    def follow(self) -> None:
        frame = self.socket.recv()
        arrived = time.time_ns()
        for message in json.loads(frame):
            if message.get("type") != "execution" or message.get("event") != "fill":
                continue
            coid = message["order"].get("client_order_id") or ""
            if coid.startswith("lt"):
                sent_ns = int(coid[2:].split("-", 1)[0])
                events.request.fire(
                    request_type="WS", name="fill", response_time=(arrived - sent_ns) / 1e6,
                    response_length=len(frame), exception=None, context={},
                )  # fmt: skip


@events.quitting.add_listener
def _check_sla(environment: Any, **_: Any) -> None:
    """The run's verdict, as its exit code."""
    stats = environment.stats
    orders = stats.get(ORDERS, "POST")
    total = stats.total
    failure_ratio = total.num_failures / total.num_requests if total.num_requests else 1.0
    p95 = orders.get_response_time_percentile(0.95) if orders.num_requests else float("inf")
    if orders.num_requests == 0 or p95 > SLA_MS or failure_ratio > MAX_FAILURE_RATIO:
        log.error(
            "FAIL: orders P95 %.1f ms (SLA %.0f ms), %.3f%% of requests failed (at most %.1f%%)",
            p95, SLA_MS, 100 * failure_ratio, 100 * MAX_FAILURE_RATIO,
        )  # fmt: skip
        environment.process_exit_code = 1
    else:
        log.info("PASS: orders P95 %.1f ms (SLA %.0f ms), %.3f%% failed", p95, SLA_MS,
                 100 * failure_ratio)  # fmt: skip
        environment.process_exit_code = 0
