"""Shared by the device tests: a recording interrupt sink and the hostile-input driver."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import settings
from hypothesis import strategies as st

from vmmio.devices.base import Device
from vmmio.devices.clock import Timer, VirtualClock
from vmmio.devices.lanes import mask


class IrqLog:
    """An `IrqSink` that records every call and each line's level."""

    def __init__(self) -> None:
        self.events: list[tuple[int, bool]] = []
        self.levels: dict[int, bool] = {}

    def set_irq(self, line: int, level: bool) -> None:
        self.events.append((line, level))
        self.levels[line] = level

    def level(self, line: int = 0) -> bool:
        return self.levels.get(line, False)

    def edges(self, line: int = 0) -> int:
        """Rising edges driven on `line`."""
        count, level = 0, False
        for event_line, event_level in self.events:
            if event_line == line:
                count += event_level and not level
                level = event_level
        return count


# (kind, target, offset or ns, size, value): an access to devices[target], or a clock step.
Op = tuple[str, int, int, int, int]

SIZES = st.one_of(st.sampled_from((1, 2, 4, 8)), st.integers(-1, 12))
OFFSETS = st.one_of(st.integers(0, 16), st.integers(-4, 1 << 33))
VALUES = st.integers(0, (1 << 64) - 1)
STEPS = st.one_of(st.integers(0, 5000), st.integers(0, 10**10))

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None)


def ops(devices: int, timed: bool = False) -> st.SearchStrategy[list[Op]]:
    target = st.integers(0, devices - 1)
    access = st.tuples(st.sampled_from(("read", "write")), target, OFFSETS, SIZES, VALUES)
    if not timed:
        return st.lists(access, max_size=80)
    step = st.tuples(st.just("advance"), st.just(0), STEPS, st.just(0), st.just(0))
    update = st.tuples(st.just("update"), st.just(0), st.just(0), st.just(0), st.just(0))
    return st.lists(st.one_of(access, step, update), max_size=80)


def run_ops(
    devices: Sequence[Device],
    program: list[Op],
    clock: VirtualClock | None = None,
    timer: Timer | None = None,
) -> None:
    """Apply `program`; every read must fit its size, and after `update()` no deadline is overdue."""
    for kind, target, offset, size, value in program:
        if kind == "read":
            result = devices[target].read(offset, size)
            assert 0 <= result <= mask(size), (target, offset, size, result)
        elif kind == "write":
            devices[target].write(offset, size, value)
        elif kind == "advance" and clock is not None:
            clock.advance(offset)
        elif kind == "update" and clock is not None and timer is not None:
            timer.update()
            deadline = timer.next_deadline_ns()
            assert deadline is None or deadline > clock.now_ns(), (deadline, clock.now_ns())
