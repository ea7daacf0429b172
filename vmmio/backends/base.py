"""The interface between the kernel and an execution backend (the "hardware").

A backend runs guest code until something needs the VMM and reports it as an event, exactly as a CPU
with hardware virtualization would: it never decodes instructions. The kernel reads and writes the
register file through it in batches, because per-register calls dominate the exit path on Unicorn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from vmmio.x86.cpuid import CpuidTable
from vmmio.x86.state import Control, Regs, VectorState

# Events a backend reports from run(). Plain classes with slots: they are created on every exit.


@dataclass(frozen=True, slots=True)
class NpfEvent:
    """A guest-physical address with no RAM behind it was touched; nothing of the instruction ran.

    `fetch`: the access was an instruction fetch. RIP may then be at the start of a straight-line run of
    instructions that led into it (an engine that translates blocks reports it there), not at the one
    whose bytes are missing.
    """

    gpa: int
    is_write: bool = False
    fetch: bool = False


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
    """The vCPU cannot continue: a triple fault, or an event the backend cannot deliver (`detail`)."""

    detail: str = "triple fault"
    unsupported: bool = False  # the backend, not the guest, is the limit


@dataclass(frozen=True, slots=True)
class StoppedEvent:
    """The backend stopped for its own reasons (time slice, request): nothing to service.

    `stop_at` is the RIP of a stop the kernel asked for with `Backend.stop_at`, else None.
    """

    stop_at: int | None = None
    timer: bool = False  # the deadline armed with `Backend.set_timer` passed


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

    def set_control(self, ctl: Control) -> None:
        """Load control state (CRs, EFER, CPL, segment caches, descriptor-table registers)."""
        ...

    def get_vector(self) -> VectorState:
        """A copy of the vector registers (XMM/YMM/ZMM, opmasks, MXCSR, MMX) the CPU has."""
        ...

    def set_vector(self, vec: VectorState) -> None:
        """Load the vector registers (those the CPU has; the rest must be zero)."""
        ...

    @property
    def cpuid(self) -> CpuidTable:
        """What CPUID reports to the guest: the emulator raises #UD for features it lacks."""
        ...

    def inject_exception(self, vector: int, error_code: int | None, cr2: int | None) -> None:
        """Deliver an exception to the guest before it runs its next instruction (CR2 set for #PF)."""
        ...

    def request_stop(self) -> None:
        """Make the current or next run() return StoppedEvent soon; callable from another thread."""
        ...

    def interruptible(self) -> bool:
        """Whether an external interrupt may be delivered now: RFLAGS.IF set, no STI/MOV SS shadow."""
        ...

    def inject_interrupt(self, vector: int) -> None:
        """Deliver external interrupt `vector` through the IDT before the next instruction."""
        ...

    def set_timer(self, delay_ns: int | None) -> None:
        """Make run() stop (StoppedEvent with `timer`) `delay_ns` from now; None disarms it."""
        ...

    def stop_at(self, rip: int) -> None:
        """Make the next run() return StoppedEvent when RIP reaches `rip`, before executing there."""
        ...

    def ram_written(self, la: int, gpa: int, size: int) -> None:
        """The kernel changed guest RAM at `gpa` (reached through linear `la` in the current address
        space): anything the hardware derived from those bytes, such as translated code, is stale."""
        ...

    def close(self) -> None:
        """Release what the backend holds (never guest RAM, which the Vm owns)."""
        ...
