"""External interrupts in the kernel, as bhyve has them: the PC's routing from its controllers to INTR.

A machine with interrupts gives its `Vm` an `InterruptSource` (what the CPU's INTR/INTA pins see), the
timer devices (`Timer`: next deadline, update) and the clock they count from. What a vCPU does with them
at each instruction boundary (fire due timers, inject when RFLAGS.IF and no STI/MOV SS shadow allow,
HLT that waits for the next deadline or a kick) is `vmmio.devices.interrupt_window`, shared with the KVM
reference; how the vCPU stops the guest again is its own.
"""

from __future__ import annotations

from vmmio.devices.interrupt_window import InterruptSource
from vmmio.devices.lapic import LVT_LINT0, LVT_MASKED, LocalApic
from vmmio.devices.pic import PicPair

LVT_DELIVERY_MODE = 0x700
LVT_EXTINT = 0x700  # delivery mode ExtINT: the 8259's INTR, acknowledged from the 8259


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
