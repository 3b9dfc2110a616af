"""A clock the test moves: cache lifetimes without sleeping into their windows."""

from __future__ import annotations


class MovableClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
