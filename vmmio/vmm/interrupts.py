"""External interrupts and time, in the kernel as bhyve has them: controllers, timers, a clock.

A machine with interrupts gives its `Vm` an `InterruptSource` (what the CPU's INTR/INTA pins see), the
timer devices (`Timer`: next deadline, update) and the clock they count from. The Vcpu then, at every
instruction boundary it gets to (each entry into the guest): lets due timers raise their lines, injects
the pending vector when the guest can take it (RFLAGS.IF set, no STI/MOV SS shadow), and arms the
backend to stop at the next deadline, or soon when an interrupt waits for the guest to open its window.
HLT with interrupts enabled waits for the next deadline or a kick instead of exiting.
"""

from __future__ import annotations

from typing import Protocol

from vmmio.devices.lapic import LVT_LINT0, LVT_MASKED, LocalApic
from vmmio.devices.pic import PicPair

LVT_DELIVERY_MODE = 0x700
LVT_EXTINT = 0x700  # delivery mode ExtINT: the 8259's INTR, acknowledged from the 8259


class InterruptSource(Protocol):
    """What the CPU sees of its interrupt controllers."""

    def pending_vector(self) -> int | None:
        """The vector INTA would return now, or None when nothing is requested."""
        ...

    def acknowledge(self) -> int:
        """The INTA cycle: the request goes in service and its vector comes back."""
        ...


class PcInterrupts:
    """A PC's interrupt path: the local APIC's own vectors first; the 8259 pair through LINT0 when the
    APIC is on and LINT0 is ExtINT, straight to INTR when the APIC is software-disabled (the state a
    kernel booted with `nolapic` leaves it in, like the BIOS's virtual-wire mode)."""

    def __init__(self, pic: PicPair, lapic: LocalApic | None = None) -> None:
        self.pic = pic
        self.lapic = lapic

    def _pic_routed(self) -> bool:
        lapic = self.lapic
        if lapic is None or not lapic.enabled:
            return True
        lint0 = lapic.lvt[LVT_LINT0]
        return not lint0 & LVT_MASKED and lint0 & LVT_DELIVERY_MODE == LVT_EXTINT

    def pending_vector(self) -> int | None:
        lapic = self.lapic
        if lapic is not None:
            vector = lapic.pending_vector()
            if vector is not None:
                return vector
        return self.pic.pending_vector() if self.pic.intr and self._pic_routed() else None

    def acknowledge(self) -> int:
        lapic = self.lapic
        if lapic is not None and lapic.pending_vector() is not None:
            return lapic.acknowledge()
        return self.pic.acknowledge()


__all__ = ["InterruptSource", "PcInterrupts"]
