"""Interrupt lines: a device's output wire into one input of an interrupt controller.

A device holds an `IrqLine` and drives it; the controller (PIC, I/O APIC) is an `IrqSink` and does its own
edge detection, as the 8259 does on its IR pins. Lines are calls rather than shared flags, so a controller
sees every transition in order (bhyve's `vatpic_assert_irq`/`vatpic_deassert_irq`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class IrqSink(Protocol):
    """An interrupt controller's inputs: `line` is driven to `level`."""

    def set_irq(self, line: int, level: bool) -> None: ...


class _Nowhere:
    def set_irq(self, line: int, level: bool) -> None:
        pass


@dataclass(frozen=True, slots=True)
class IrqLine:
    """One output wire, bound to input `line` of `sink`."""

    sink: IrqSink
    line: int = 0

    def set(self, level: bool) -> None:
        self.sink.set_irq(self.line, level)

    def raise_(self) -> None:
        self.set(True)

    def lower(self) -> None:
        self.set(False)

    def pulse(self) -> None:
        """A rising then a falling edge: one interrupt for an edge-triggered input."""
        self.set(True)
        self.set(False)


NO_IRQ = IrqLine(_Nowhere())
"""The line of a device that is not wired to any controller."""
