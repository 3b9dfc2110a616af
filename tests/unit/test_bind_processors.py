"""The order log's own bind processors on SQLite write exactly what SQLAlchemy's would, so
rows written by the group-commit writer read back through SQLAlchemy unchanged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite

from app.storage.sql import tables as t
from app.storage.sql.statements import bind_processor

DIALECT = sqlite.dialect()


def sqlalchemys(column: Any) -> Any:
    return column.type.dialect_impl(DIALECT).bind_processor(DIALECT)


@given(
    st.datetimes(
        min_value=datetime(1, 1, 1),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5))]),
    )
)
def test_timestamps_are_written_as_sqlalchemy_writes_them(value: datetime) -> None:
    column = t.orders.c.created_at
    assert bind_processor(column, DIALECT)(value) == sqlalchemys(column)(value)


def test_one_instant_in_two_offsets_is_written_with_each_ones_wall_clock() -> None:
    # Conversions are remembered; equal instants must not share an answer.
    column = t.orders.c.created_at
    at_utc = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    elsewhere = at_utc.astimezone(timezone(timedelta(hours=-5)))
    assert at_utc == elsewhere
    written = [bind_processor(column, DIALECT)(v) for v in (at_utc, elsewhere, at_utc)]
    assert written == [
        "2026-11-25 12:00:00.000000",
        "2026-11-25 07:00:00.000000",
        "2026-11-25 12:00:00.000000",
    ]
    assert written == [sqlalchemys(column)(v) for v in (at_utc, elsewhere, at_utc)]


@given(st.datetimes(min_value=datetime(1, 1, 1), timezones=st.just(UTC)))
def test_a_written_timestamp_reads_back_as_itself(value: datetime) -> None:
    column = t.orders.c.created_at
    stored = bind_processor(column, DIALECT)(value)
    read = column.type.dialect_impl(DIALECT).result_processor(DIALECT, None)
    assert read(stored) == value


@given(
    st.decimals(
        allow_nan=False, allow_infinity=False, places=8, min_value=-(10**12), max_value=10**12
    )
)
def test_a_written_decimal_reads_back_as_itself(value: Decimal) -> None:
    column = t.positions.c.realized_pnl
    stored = bind_processor(column, DIALECT)(value)
    read = column.type.dialect_impl(DIALECT).result_processor(DIALECT, None)
    assert read(stored) == value
    assert "E" not in str(read(Decimal("0E-8")))  # zero reads back plain, not as 0E-8


def test_a_naive_timestamp_is_refused_as_sqlalchemy_refuses_it() -> None:
    column = t.orders.c.created_at
    for processor in (bind_processor(column, DIALECT), sqlalchemys(column)):
        with pytest.raises(ValueError, match="naive"):
            processor(datetime(2026, 11, 25, 1, 0))


def test_other_columns_keep_sqlalchemys_processor() -> None:
    assert bind_processor(t.orders.c.status, DIALECT) is None
    assert bind_processor(t.kill_switches.c.active, DIALECT) is not None  # Boolean -> int
