"""Percentiles read off histogram buckets, the logs' redaction and format, and how an
order's time is split between its stages."""

from __future__ import annotations

import json
import logging
import math
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.histograms import BucketCounts, quantile
from app.logs import ACCOUNT, REQUEST_ID, JsonFormatter, TextFormatter, redact, request_id_from
from app.services.metrics import STAGE_BUCKETS_S
from app.services.order_timing import OrderTimer, Stage

BOUNDS = (*STAGE_BUCKETS_S, math.inf)


def histogram_of(samples: list[float]) -> BucketCounts:
    values = np.asarray(samples)
    cumulative = tuple(float((values <= b).sum()) for b in BOUNDS)
    return BucketCounts(BOUNDS, cumulative, float(values.sum()))


@given(
    st.lists(st.floats(min_value=0.0, max_value=9.0), min_size=1, max_size=300),
    st.sampled_from([0.5, 0.95, 0.99]),
)
def test_a_percentile_falls_in_the_bucket_of_the_true_one(samples: list[float], q: float) -> None:
    estimate = quantile(q, histogram_of(samples))
    assert estimate is not None
    # The sample of rank ceil(q * n) is in the bucket the estimate is interpolated in.
    true = sorted(samples)[max(0, math.ceil(q * len(samples)) - 1)]
    upper = next(b for b in BOUNDS if true <= b)
    lower = max([0.0, *(b for b in BOUNDS if b < upper)])
    assert lower <= estimate <= upper


def test_percentiles_of_nothing_are_none_and_out_of_range_ones_are_refused() -> None:
    empty = BucketCounts(BOUNDS, tuple(0.0 for _ in BOUNDS), 0.0)
    assert quantile(0.95, empty) is None
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        quantile(1.5, histogram_of([0.001]))


def test_a_window_is_the_difference_and_a_restart_counts_from_zero() -> None:
    early = histogram_of([0.001] * 10)
    late = histogram_of([0.001] * 10 + [0.05] * 90)
    window = late.minus(early)
    assert window.count == 90
    assert quantile(0.5, window) == pytest.approx(0.0375, abs=0.013)  # in (0.03, 0.05]
    restarted = histogram_of([0.2])
    assert restarted.minus(late) == restarted
    assert late.minus(None) == late


def test_secrets_never_reach_a_log_line() -> None:
    line = (
        "connect redis://gateway:s3cret@redis:6379/0 failed; key og_FK83fReEMjbZ2S8Q8dkk5ZLV0"
        " header Authorization: Bearer abc.def; dsn password=hunter2 and {'password': 'x1'}"
    )
    cleaned = redact(line)
    for secret in ("s3cret", "FK83fReEMjbZ2S8Q8dkk5ZLV0", "abc.def", "hunter2", "x1"):
        assert secret not in cleaned
    assert "redis://gateway:***@redis:6379/0" in cleaned


def test_a_request_id_is_the_clients_if_well_formed() -> None:
    assert request_id_from(b"desk-7.42:abc") == "desk-7.42:abc"
    for bad in (None, b"", b"has space", b"x" * 65, "ünï"):
        made = request_id_from(bad)
        assert len(made) == 16
        assert made != bad


def test_a_json_line_carries_the_requests_context_and_what_the_line_names() -> None:
    tokens = REQUEST_ID.set("r-1"), ACCOUNT.set("acc")
    record = logging.LogRecord("app.x", logging.INFO, __file__, 1, "placed %s", ("o1",), None)
    record.order_id = "o1"
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "placed o1"
    assert (line["request_id"], line["account"], line["order_id"]) == ("r-1", "acc", "o1")
    assert line["level"] == "info"
    try:
        raise RuntimeError("token og_abcdefghijklmnop")
    except RuntimeError:
        failed = logging.LogRecord("app.x", logging.ERROR, __file__, 1, "x", (), sys.exc_info())
    rendered = JsonFormatter().format(failed)
    assert "abcdefghijklmnop" not in rendered
    assert "Traceback" in json.loads(rendered)["exc"]
    assert "request_id=r-1" in TextFormatter().format(record)
    REQUEST_ID.reset(tokens[0])
    ACCOUNT.reset(tokens[1])


def test_the_guards_lap_is_split_into_its_step_and_its_wait() -> None:
    timer = OrderTimer()
    timer.lap_guard(1000.0)  # a wait longer than the lap itself: capped at the lap
    spent = timer._spent
    assert spent[Stage.BREAKER] == 0.0
    assert spent[Stage.PACING] >= 0.0
    timer.lap(Stage.PERSIST)
    timer.lap(Stage.PERSIST)
    assert set(spent) == {Stage.BREAKER, Stage.PACING, Stage.PERSIST}
