"""Interrupt lines: each operation drives the controller input it is bound to, in order."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from devices.helpers import IrqLog
from vmmio.devices.irq import NO_IRQ, IrqLine


@pytest.mark.parametrize(
    ("operation", "events"),
    [
        (IrqLine.raise_, [(5, True)]),
        (IrqLine.lower, [(5, False)]),
        (lambda line: line.set(True), [(5, True)]),
        (lambda line: line.set(False), [(5, False)]),
        (IrqLine.pulse, [(5, True), (5, False)]),
    ],
    ids=["raise", "lower", "set-high", "set-low", "pulse"],
)
def test_line_drives_its_input(operation: Callable[[IrqLine], None], events: list[tuple[int, bool]]) -> None:
    sink = IrqLog()
    operation(IrqLine(sink, 5))
    assert sink.events == events


def test_pulse_is_one_rising_edge_and_leaves_the_line_low() -> None:
    sink = IrqLog()
    line = IrqLine(sink, 3)
    line.pulse()
    line.pulse()
    assert (sink.edges(3), sink.level(3)) == (2, False)


def test_lines_are_values_not_mutable_wiring() -> None:
    sink = IrqLog()
    assert IrqLine(sink, 1) == IrqLine(sink, 1) != IrqLine(sink, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        IrqLine(sink, 1).line = 2  # type: ignore[misc]


def test_unwired_line_goes_nowhere() -> None:
    for operation in (NO_IRQ.raise_, NO_IRQ.lower, NO_IRQ.pulse):
        assert operation() is None
    assert NO_IRQ.line == 0 and not isinstance(NO_IRQ.sink, IrqLog)
