"""Market data through a real gateway: ticks POSTed, checked by the worker's processor,
made into bars and last trades, dead-lettered when bad, streamed, and turned into signals.

One gateway for the module (its own redis-server: market data moves the reference prices
that other tests' orders rely on), with the worker ``serve`` starts."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import numpy as np
import pytest
import redis
import websockets

from app.config import DEFAULT_UNIVERSE
from app.domain.raw_signals import SignalSet, raw_signals
from app.domain.signal_math import composite, orthogonalize, zscore
from tests.conftest import DatabaseFactory, Gateway, launch_gateway, wait_for
from tests.helpers.orders import eventually_status, limit
from tests.helpers.processes import children, command_line
from tests.helpers.stream import stream_url

RAW = "og:md:raw"


@pytest.fixture(scope="module")
def md_gateway(
    database_factory: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("md")
    gateway = launch_gateway(
        tmp,
        database_factory.create("sqlite"),
        None,  # serve starts a private redis-server
        workers=1,
        extra_env={
            "ORDERGATE_BROKER_GUARD__PACING__RT_MARKETDATA__RATE": "20",
            "ORDERGATE_BROKER_GUARD__PACING__RT_MARKETDATA__BURST": "10",
        },
    )
    gateway.redis_url = (tmp / "redis.url").read_text().strip()
    gateway.keys = {
        "admin": gateway.new_key("ops", "admin"),
        "trader": gateway.new_key("md-trader"),
        "viewer": gateway.new_key("md-trader", "viewer"),
    }
    yield gateway
    gateway.stop()


def tick(symbol: str, price: str, at: datetime, size: str = "100") -> dict[str, Any]:
    return {"symbol": symbol, "price": price, "size": size, "time": at.isoformat()}


def minute(n: int) -> datetime:
    """The start of minute ``n`` of a fixed session."""
    return datetime(2026, 3, 2, 14, 30, tzinfo=UTC) + timedelta(minutes=n)


async def post_ticks(gateway: Gateway, ticks: list[dict[str, Any]]) -> httpx.Response:
    async with gateway.client(gateway.keys["admin"]) as admin:
        return await admin.post("/v1/marketdata/ticks", json={"ticks": ticks})


async def marketdata(gateway: Gateway, symbol: str) -> dict[str, Any]:
    async with gateway.client(gateway.keys["viewer"]) as viewer:
        response = await viewer.get(f"/v1/marketdata/{symbol}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def until_last_price(gateway: Gateway, symbol: str, price: str) -> dict[str, Any]:
    async def arrived() -> bool:
        return (await marketdata(gateway, symbol))["last_price"] == price

    await wait_for(arrived, within=10)
    return await marketdata(gateway, symbol)


async def dead_letters(gateway: Gateway) -> dict[str, Any]:
    async with gateway.client(gateway.keys["admin"]) as admin:
        response = await admin.get("/v1/marketdata/dead-letters")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_ticks_make_the_last_trade_the_bars_and_the_reference_price(
    md_gateway: Gateway,
) -> None:
    t0 = minute(0)
    accepted = await post_ticks(
        md_gateway,
        [
            tick("MSFT", "420.10", t0 + timedelta(seconds=1), "100"),
            tick("MSFT", "421.00", t0 + timedelta(seconds=20), "50"),
            tick("MSFT", "419.50", t0 + timedelta(seconds=59), "25"),
            tick("MSFT", "419.75", t0 + timedelta(seconds=61), "10"),  # the next minute
        ],
    )
    assert accepted.status_code == 202, accepted.text
    assert accepted.json() == {"accepted": 4}

    view = await until_last_price(md_gateway, "MSFT", "419.75")
    assert view["last_trade_at"] == "2026-03-02T14:31:01Z"
    assert view["previous_bar"] == {
        "start": "2026-03-02T14:30:00Z",
        "open": "420.10",
        "high": "421.00",
        "low": "419.50",
        "close": "419.50",
        "volume": "175",
        "trades": 3,
    }
    assert view["bar"]["start"] == "2026-03-02T14:31:00Z"
    assert (view["bar"]["open"], view["bar"]["volume"], view["bar"]["trades"]) == (
        "419.75",
        "10",
        1,
    )

    async def reference_moved() -> bool:
        async with md_gateway.client(md_gateway.keys["viewer"]) as viewer:
            symbols = (await viewer.get("/v1/symbols")).json()
        return {s["symbol"]: s["reference_price"] for s in symbols}["MSFT"] == "419.75"

    await wait_for(reference_moved, within=5)


async def test_bad_ticks_go_to_dead_letters_with_their_reason_and_move_nothing(
    md_gateway: Gateway,
) -> None:
    t0 = minute(100)
    assert (await post_ticks(md_gateway, [tick("AMZN", "190.25", t0)])).status_code == 202
    await until_last_price(md_gateway, "AMZN", "190.25")
    before = (await dead_letters(md_gateway))["counts"]

    bad = [
        tick("AMZN", "0", t0 + timedelta(seconds=1)),
        tick("AMZN", "-3.5", t0 + timedelta(seconds=2)),
        tick("AMZN", "191", t0 + timedelta(seconds=3), size="-1"),
        tick("ZZZZ", "10", t0 + timedelta(seconds=4)),
        tick("AMZN", "189", t0 - timedelta(seconds=1)),  # before AMZN's last tick
        tick("AMZN", "190.001", t0 + timedelta(seconds=4)),  # finer than the cent
        tick("AMZN", "190.30", t0 + timedelta(seconds=4), size="0.0000001"),
    ]
    # A good tick after them shows they were all processed.
    response = await post_ticks(
        md_gateway, [*bad, tick("AMZN", "190.50", t0 + timedelta(seconds=5))]
    )
    assert response.status_code == 202, response.text
    view = await until_last_price(md_gateway, "AMZN", "190.50")
    assert view["bar"]["low"] == "190.25"
    assert view["bar"]["high"] == "190.50"
    assert view["bar"]["trades"] == 2

    letters = await dead_letters(md_gateway)
    reasons = [
        "price_not_positive",
        "price_not_positive",
        "size_negative",
        "unknown_symbol",
        "time_backwards",
        "price_out_of_range",
        "size_out_of_range",
    ]
    for reason in set(reasons):
        assert letters["counts"].get(reason, 0) - before.get(reason, 0) == reasons.count(reason)
    newest = letters["newest"][: len(reasons)]
    assert sorted(d["reason"] for d in newest) == sorted(reasons)
    assert {d["price"] for d in newest} == {"0", "-3.5", "191", "10", "189", "190.001", "190.30"}


GOOD = '"symbol": "AAPL", "price": 1, "size": 1, "time": "2026-03-02T14:30:00Z"'


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ('{"ticks": []}', "no ticks"),
        ('{"ticks": [{"symbol": "AAPL", "price": 1, "size": 1}]}', "no time"),
        (f'{{"ticks": [{{{GOOD.replace("1,", chr(34) + "x" + chr(34) + ",", 1)}}}]}}', "price x"),
        ('{"ticks": [{' + GOOD.replace("14:30:00Z", "14:30:00") + "}]}", "time without a zone"),
        ('{"ticks": [{' + GOOD + ', "venue": "x"}]}', "unknown field"),
        ('{"ticks": [' + ",".join(["{" + GOOD + "}"] * 5001) + "]}", "too many"),
        ('{"ticks": [{' + GOOD.replace('"price": 1', '"price": 1e400') + "}]}", "price 1e400"),
        ('{"ticks": [{' + GOOD.replace('"size": 1', '"size": 9e999999') + "}]}", "size 9e999999"),
        ('{"ticks": [{' + GOOD.replace('"price": 1', '"price": 1e-400') + "}]}", "price 1e-400"),
        ('{"ticks": [{' + GOOD.replace("2026-03-02", "9999-12-31") + "}]}", "time in 9999"),
        ('{"ticks": [{' + GOOD.replace("2026-03-02", "1969-12-31") + "}]}", "time before 1970"),
    ],
)
async def test_a_malformed_batch_is_refused_whole_and_takes_nothing_in(
    md_gateway: Gateway, body: str, why: str
) -> None:
    assert md_gateway.redis_url is not None
    with redis.Redis.from_url(md_gateway.redis_url) as r:
        before = r.xlen(RAW)
        async with md_gateway.client(md_gateway.keys["admin"]) as admin:
            response = await admin.post(
                "/v1/marketdata/ticks",
                content=body,
                headers={"Content-Type": "application/json"},
            )
        assert response.status_code == 422, (why, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert r.xlen(RAW) == before, why


async def test_only_an_admin_key_may_post_ticks_and_an_unknown_symbol_is_404(
    md_gateway: Gateway,
) -> None:
    body = {"ticks": [tick("AAPL", "1", minute(0))]}
    async with md_gateway.client(md_gateway.keys["trader"]) as trader:
        refused = await trader.post("/v1/marketdata/ticks", json=body)
        unknown = await trader.get("/v1/marketdata/ZZZZ")
        no_signal = await trader.get("/v1/signals/ZZZZ")
    assert refused.status_code == 403, refused.text
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "symbol.not_found"
    assert no_signal.status_code == 404
    assert no_signal.json()["code"] == "symbol.not_found"


async def test_a_resting_limit_order_fills_when_market_data_crosses_it(md_gateway: Gateway) -> None:
    async with md_gateway.client(md_gateway.keys["trader"]) as trader:
        placed = await trader.post("/v1/orders", json=limit("219.00", symbol="JPM", qty="5"))
        assert placed.status_code == 201, placed.text
        order_id = placed.json()["id"]
        assert placed.json()["status"] == "new"

        await post_ticks(md_gateway, [tick("JPM", "218.90", minute(200))])

        filled = await eventually_status(trader, order_id, "filled", within=10)
    assert Decimal(filled["filled_qty"]) == 5


async def test_batches_beyond_the_rt_marketdata_bucket_are_429_and_not_taken_in(
    md_gateway: Gateway,
) -> None:
    assert md_gateway.redis_url is not None
    with redis.Redis.from_url(md_gateway.redis_url) as r:
        before = r.xlen(RAW)
        answers = await asyncio.gather(
            *(post_ticks(md_gateway, [tick("XOM", "115", minute(300 + i))]) for i in range(40))
        )
        taken = [a for a in answers if a.status_code == 202]
        refused = [a for a in answers if a.status_code == 429]
        assert len(taken) + len(refused) == 40, {a.status_code for a in answers}
        assert refused, "the bucket (20 a second, burst 10) let 40 at once through"
        assert all(a.json()["code"] == "pacing.rate_limited" for a in refused)
        assert all(int(a.headers["retry-after"]) >= 1 for a in refused)
        assert r.xlen(RAW) - before == len(taken)


async def test_the_marketdata_channel_streams_each_processed_batch(md_gateway: Gateway) -> None:
    headers = {"Authorization": f"Bearer {md_gateway.keys['viewer']}"}
    async with websockets.connect(stream_url(md_gateway), additional_headers=headers) as ws:
        await ws.send(json.dumps({"op": "subscribe", "channels": ["marketdata"]}))
        await until_message(ws, "subscribed")
        await post_ticks(md_gateway, [tick("IWM", "221.25", minute(400))])
        message = await until_message(ws, "marketdata")
    assert message["ticks"] == [
        {"symbol": "IWM", "price": "221.25", "size": "100", "ts_us": _us(minute(400))}
    ]


async def until_message(ws: websockets.ClientConnection, kind: str) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            for message in json.loads(await ws.recv()):
                if message["type"] == kind:
                    found: dict[str, Any] = message
                    return found


def _us(moment: datetime) -> int:
    return round(moment.timestamp() * 1_000_000)


# -- signals ----------------------------------------------------------------------------------


def history(minutes: int, seed: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """A price and volume path per symbol of the universe, one tick a minute."""
    rng = np.random.default_rng(seed)
    symbols = list(DEFAULT_UNIVERSE)
    start = np.array([float(DEFAULT_UNIVERSE[s]) for s in symbols])
    prices = np.round(
        start * np.exp(np.cumsum(rng.normal(0, 0.002, (minutes, len(symbols))), axis=0)), 2
    )
    volumes = rng.integers(100, 10_000, (minutes, len(symbols))).astype(float)
    return symbols, prices, volumes


async def test_signals_from_posted_history_match_the_math_done_offline(md_gateway: Gateway) -> None:
    """70 minutes of one tick a minute per symbol: the worker's published values equal the
    domain functions run here on the same bars."""
    symbols, prices, volumes = history(70, seed=11)
    base = 1000  # minutes far from the other tests' ticks
    ticks = [
        tick(
            s,
            f"{prices[m, i]:.2f}",
            minute(base + m) + timedelta(seconds=30),
            f"{volumes[m, i]:.0f}",
        )
        for m in range(70)
        for i, s in enumerate(symbols)
    ]
    assert (await post_ticks(md_gateway, ticks)).status_code == 202

    async with md_gateway.client(md_gateway.keys["viewer"]) as viewer:

        async def cycle_done() -> bool:
            latest = (await viewer.get("/v1/signals/latest")).json()["signals"]
            want = _us(minute(base + 69) + timedelta(seconds=30))
            return all(latest.get(s, {}).get("ts_us") == want for s in symbols)

        await wait_for(cycle_done, within=15)
        latest = (await viewer.get("/v1/signals/latest")).json()["signals"]
        one = (await viewer.get("/v1/signals/NVDA")).json()
    assert one == latest["NVDA"]

    signals = SignalSet((5, 20, 60), 1, 20, (5, 20))
    window = signals.window
    closes = np.vstack([prices[69 - window + 1 : 69], prices[69:70]])  # bars, then the last trade
    bar_volumes = volumes[69 - window + 1 : 69]
    raw = raw_signals(signals, closes, bar_volumes)
    weights = np.array([0.10, 0.25, 0.25, 0.20, -0.10, 0.10])
    expected = composite(orthogonalize(zscore(raw[np.newaxis]), method="residual"), weights)[0]
    for i, symbol in enumerate(symbols):
        assert latest[symbol]["composite"] == pytest.approx(expected[i], abs=1e-9), symbol
        assert list(latest[symbol]["raw"]) == signals.names


async def test_the_signals_channel_streams_each_cycle(md_gateway: Gateway) -> None:
    headers = {"Authorization": f"Bearer {md_gateway.keys['viewer']}"}
    async with websockets.connect(stream_url(md_gateway), additional_headers=headers) as ws:
        await ws.send(json.dumps({"op": "subscribe", "channels": ["signals"]}))
        await until_message(ws, "subscribed")
        at = minute(2000)
        await post_ticks(md_gateway, [tick("SPY", "581.25", at)])
        message = await until_message(ws, "signals")
    assert message["ts_us"] == _us(at)
    assert set(message["composite"]) == set(DEFAULT_UNIVERSE)


async def test_a_worker_killed_mid_feed_is_restarted_and_every_tick_is_used_once(
    md_gateway: Gateway,
) -> None:
    """kill -9 of `ordergate worker` while batches keep coming: serve restarts it, and each
    tick reaches the events exactly once (the processor's cursor is committed with them)."""
    assert md_gateway.process is not None
    assert md_gateway.redis_url is not None
    worker = worker_of(md_gateway.process.pid)
    base = minute(3000)
    with redis.Redis.from_url(md_gateway.redis_url) as r:
        events_before = r.xlen("og:md:events")
        sent = 0
        for n in range(30):
            ticks = [
                tick("QQQ", f"{500 + n % 7}.{i:02d}", base + timedelta(seconds=n, milliseconds=i))
                for i in range(10)
            ]
            assert (await post_ticks(md_gateway, ticks)).status_code == 202
            sent += len(ticks)
            if n == 10:
                os.kill(worker, signal.SIGKILL)
            await asyncio.sleep(0.1)
        last = f"{500 + 29 % 7}.09"
        view = await until_last_price(md_gateway, "QQQ", last)
        assert worker_of(md_gateway.process.pid) != worker  # a new one
        used = []
        for _id, fields in r.xrange("og:md:events", "-", "+")[events_before:]:
            used += [t for t in json.loads(fields[b"ticks"]) if t[0] == "QQQ" and t[3] >= _us(base)]
    assert len(used) == sent
    assert len({(t[1], t[3]) for t in used}) == sent
    assert view["bar"]["trades"] == sent  # all in one minute: one bar, every tick in it once


def worker_of(serve_pid: int) -> int:
    found = [pid for pid in children(serve_pid) if "app.cli worker" in command_line(pid)]
    assert len(found) == 1, found
    return found[0]
