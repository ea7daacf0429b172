"""Time as an input: timer devices read a `Clock` and compute their counters from it, never tick.

A timer device also reports `next_deadline_ns()`, the clock time of the next interrupt it will raise, and
`update()` raises whatever is due at `clock.now_ns()`. A run loop stops the guest at the earliest deadline
and calls `update()`; a test advances a `VirtualClock` instead, so every run is reproducible.
"""

from __future__ import annotations

import time
from typing import Protocol

NS_PER_S = 1_000_000_000


class Clock(Protocol):
    def now_ns(self) -> int:
        """Nanoseconds since the clock started; never decreases."""
        ...


class Timer(Protocol):
    """What a run loop needs from a timer device."""

    def next_deadline_ns(self) -> int | None: ...

    def update(self) -> None: ...


class HostClock:
    """The host's monotonic clock, started at 0 when constructed."""

    def __init__(self) -> None:
        self._origin = time.monotonic_ns()

    def now_ns(self) -> int:
        return time.monotonic_ns() - self._origin


class VirtualClock:
    """A clock that moves only when told: for tests and deterministic replay."""

    def __init__(self, start_ns: int = 0) -> None:
        if start_ns < 0:
            raise ValueError("a clock starts at or after 0")
        self._now = start_ns

    def now_ns(self) -> int:
        return self._now

    def advance(self, ns: int) -> None:
        if ns < 0:
            raise ValueError("time does not run backwards")
        self._now += ns

    def set(self, ns: int) -> None:
        if ns < self._now:
            raise ValueError("time does not run backwards")
        self._now = ns


def ticks_at(ns: int, hz: int) -> int:
    """Whole periods of an `hz` clock that have ended by time `ns` (both counted from clock time 0)."""
    return ns * hz // NS_PER_S


def ns_at_tick(tick: int, hz: int) -> int:
    """The first clock time by which `tick` whole periods of an `hz` clock have ended."""
    return -(-tick * NS_PER_S // hz)
