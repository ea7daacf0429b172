"""Clocks and the tick arithmetic every timer device uses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.helpers import FUZZ
from vmmio.devices.clock import NS_PER_S, HostClock, VirtualClock, ns_at_tick, ticks_at


def test_virtual_clock_moves_only_when_told() -> None:
    clock = VirtualClock(100)
    assert clock.now_ns() == clock.now_ns() == 100
    clock.advance(50)
    clock.set(1000)
    assert clock.now_ns() == 1000


@pytest.mark.parametrize(("action", "ns"), [("advance", -1), ("set", 999), ("start", -5)])
def test_virtual_clock_never_runs_backwards(action: str, ns: int) -> None:
    with pytest.raises(ValueError):
        clock = VirtualClock(1000 if action != "start" else ns)
        getattr(clock, action)(ns)


def test_host_clock_starts_near_zero_and_is_monotonic() -> None:
    clock = HostClock()
    first, second = clock.now_ns(), clock.now_ns()
    assert 0 <= first <= second < NS_PER_S


@FUZZ
@given(tick=st.integers(0, 1 << 48), hz=st.sampled_from((1, 32768, 1_193_182, 10**9, 3 * 10**9 + 7)))
def test_ns_at_tick_is_the_first_time_the_tick_has_ended(tick: int, hz: int) -> None:
    ns = ns_at_tick(tick, hz)
    assert ticks_at(ns, hz) >= tick
    assert ns == 0 or ticks_at(ns - 1, hz) < tick
