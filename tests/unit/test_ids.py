from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from app.domain.ids import ALPHABET, new_id


def test_ids_sort_by_creation_time_and_are_unique() -> None:
    ids = [new_id(now_ms=1_700_000_000_000 + i) for i in range(1000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 1000
    assert all(len(i) == 26 for i in ids)


def test_ids_within_one_millisecond_are_unique() -> None:
    assert len({new_id(now_ms=5) for _ in range(10_000)}) == 10_000


@given(ms=st.integers(0, 2**48 - 1))
def test_an_id_spells_its_millisecond_in_its_first_ten_characters(ms: int) -> None:
    value = 0
    for char in new_id(now_ms=ms):
        value = value * 32 + ALPHABET.index(char)
    assert value >> 80 == ms
    assert value < 2**128
