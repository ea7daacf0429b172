"""The interface between the kernel and an execution backend (the "hardware").

A backend runs guest code until something needs the VMM and reports it as an event, exactly as a CPU
with hardware virtualization would: it never decodes instructions. The kernel reads and writes the
register file through it in batches, because per-register calls dominate the exit path on Unicorn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from vmmio.x86.regs import RFLAGS_FIXED1

# Control-register and EFER bits the kernel consults.
CR0_PE = 1 << 0
CR0_WP = 1 << 16
CR0_AM = 1 << 18
CR0_PG = 1 << 31
CR4_PSE = 1 << 4
CR4_PAE = 1 << 5
CR4_LA57 = 1 << 12
CR4_SMEP = 1 << 20
CR4_SMAP = 1 << 21
CR4_PKE = 1 << 22
EFER_LME = 1 << 8
EFER_LMA = 1 << 10
EFER_NXE = 1 << 11


@dataclass(slots=True)
class Segment:
    """A segment register's hidden part (descriptor cache), as VMX's guest-state area holds it."""

    selector: int = 0
    base: int = 0
    limit: int = 0xFFFF
    type: int = 3  # descriptor type field: data read/write accessed by default
    s: bool = True  # code/data (True) or system descriptor
    dpl: int = 0
    present: bool = True
    db: bool = False  # D/B: default operand size (CS) or stack size (SS)
    l: bool = False  # 64-bit code segment (CS only)
    g: bool = False
    unusable: bool = False


def _default_segments() -> list[Segment]:
    return [Segment() for _ in range(6)]


@dataclass(slots=True)
class Control:
    """Control state that decides modes, paging and checks; changes rarely compared to GPRs."""

    cr0: int = 0
    cr2: int = 0
    cr3: int = 0
    cr4: int = 0
    efer: int = 0
    cpl: int = 0
    segs: list[Segment] = field(default_factory=_default_segments)
    # PAE paging: the four PDPTEs as loaded with CR3 (VMX keeps them in the VMCS); None: read at CR3.
    pdptes: tuple[int, int, int, int] | None = None
    pkru: int = 0  # protection-key rights for user pages (CR4.PKE)

    @property
    def code_size(self) -> int:
        """Default code size (16, 32 or 64) from CR0.PE, EFER.LMA and CS.L/CS.D."""
        if not self.cr0 & CR0_PE:
            return 16
        cs = self.segs[1]
        if self.efer & EFER_LMA and cs.l:
            return 64
        return 32 if cs.db else 16


def long_mode_control(cr3: int, code_selector: int = 8) -> Control:
    """64-bit mode with 4-level paging rooted at `cr3`: the state a 64-bit kernel runs in."""
    ctl = Control(
        cr0=CR0_PE | CR0_PG | CR0_WP,
        cr3=cr3,
        cr4=CR4_PAE,
        efer=EFER_LME | EFER_LMA | EFER_NXE,
    )
    ctl.segs[1] = Segment(selector=code_selector, limit=0xFFFF_FFFF, type=11, l=True, g=True)
    return ctl


@dataclass(slots=True)
class Regs:
    """The GPRs (hardware numbering), RIP and RFLAGS: what an instruction reads and writes."""

    gprs: list[int] = field(default_factory=lambda: [0] * 16)
    rip: int = 0
    rflags: int = RFLAGS_FIXED1

    def copy(self) -> Regs:
        return Regs(self.gprs[:], self.rip, self.rflags)


# Events a backend reports from run(). Plain classes with slots: they are created on every exit.


@dataclass(frozen=True, slots=True)
class NpfEvent:
    """A guest-physical address with no RAM behind it was touched; nothing of the instruction ran."""

    gpa: int
    is_write: bool = False


@dataclass(frozen=True, slots=True)
class IoEvent:
    """A port I/O instruction (in/out/ins/outs) is at RIP; nothing of it ran."""

    port: int
    size: int
    is_in: bool


@dataclass(frozen=True, slots=True)
class HltEvent:
    """The guest executed HLT; RIP already points past it."""


@dataclass(frozen=True, slots=True)
class ShutdownEvent:
    """Triple fault: the guest cannot continue."""


@dataclass(frozen=True, slots=True)
class StoppedEvent:
    """The backend stopped for its own reasons (time slice, request): nothing to service."""


BackendEvent = NpfEvent | IoEvent | HltEvent | ShutdownEvent | StoppedEvent


class Backend(Protocol):
    """What the kernel needs from the hardware."""

    def run(self) -> BackendEvent:
        """Run the guest from the current state until the next event."""
        ...

    def get_regs(self) -> Regs:
        """A fresh copy of GPRs, RIP and RFLAGS that the caller may mutate."""
        ...

    def set_regs(self, regs: Regs, dirty: int) -> None:
        """Write back the registers in `dirty` (bit n: GPR n, bit 16: RIP, bit 17: RFLAGS)."""
        ...

    def get_control(self) -> Control:
        """The current control state; the kernel treats it as read-only."""
        ...

    def inject_exception(self, vector: int, error_code: int | None, cr2: int | None) -> None:
        """Deliver an exception to the guest before it runs its next instruction (CR2 set for #PF)."""
        ...


DIRTY_RIP = 1 << 16
DIRTY_RFLAGS = 1 << 17
DIRTY_ALL = (1 << 18) - 1
