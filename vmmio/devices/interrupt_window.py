"""Interrupts and time as a vCPU meets them, one mechanism for vmmio's kernel and the KVM reference.

A machine with interrupts gives its vCPUs a `Chipset` (a `Vm` is one): what the CPU's INTR/INTA pins see
(`InterruptSource`), the timer devices and the clock they count from, and an event that ends HLT waits.
The rules at an instruction boundary are the same whatever runs the guest, so they live here, below both
vCPUs: `offer_interrupt` lets due timers raise their lines, injects the pending vector when the CPU can
take it (RFLAGS.IF set, no STI/MOV SS shadow) and says when to look again: at the next deadline, or,
while an interrupt waits for the guest to open its window, within a poll interval unless the CPU
reports the window opening itself. `wait_halted` is HLT with interrupts enabled. Only how a vCPU makes
the guest stop then is its own: `Vcpu` gives Unicorn an instruction budget (and polls); `KvmVcpu` arms
a signal timer and sets `request_interrupt_window`, as a userspace-irqchip VMM does.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from vmmio.devices.clock import NS_PER_S, Clock, Timer

WINDOW_POLL_NS = 1_000_000  # an interrupt pending while the guest cannot take it: look again this soon


class InterruptSource(Protocol):
    """What the CPU sees of its interrupt controllers."""

    def pending_vector(self) -> int | None:
        """The vector INTA would return now, or None when nothing is requested."""
        ...

    def acknowledge(self) -> int:
        """The INTA cycle: the request goes in service and its vector comes back."""
        ...


class Chipset(Protocol):
    """The part of a machine a vCPU takes interrupts and time from; a `Vm` is one."""

    @property
    def interrupts(self) -> InterruptSource | None: ...

    @property
    def timers(self) -> Sequence[Timer]: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def wakeup(self) -> threading.Event:
        """Set to end a HLT wait early (an interrupt raised from another thread, a stop)."""
        ...


class InterruptPins(Protocol):
    """The CPU side at an instruction boundary (an execution backend, or the KVM vCPU)."""

    def interruptible(self) -> bool:
        """Whether an external interrupt may be delivered now: RFLAGS.IF set, no STI/MOV SS shadow."""
        ...

    def inject_interrupt(self, vector: int) -> None:
        """Deliver external interrupt `vector` through the IDT before the next instruction."""
        ...


class Halt(enum.Enum):
    """How HLT ends."""

    RESUME = enum.auto()  # an interrupt is pending: run the guest, which takes it at once
    EXIT = enum.auto()  # nothing could ever wake it (IF clear, no interrupts or timers): userspace decides
    STOPPED = enum.auto()  # the vCPU was asked to stop while it waited


def fire_due_timers(chipset: Chipset) -> int | None:
    """Let timers whose deadline passed raise their interrupts; the next deadline (clock ns), if any."""
    now = chipset.clock.now_ns()
    nearest = None
    for timer in chipset.timers:
        deadline = timer.next_deadline_ns()
        if deadline is not None and deadline <= now:
            timer.update()
            deadline = timer.next_deadline_ns()
        if deadline is not None and (nearest is None or deadline < nearest):
            nearest = deadline
    return nearest


def offer_interrupt(
    chipset: Chipset, cpu: InterruptPins, poll_ns: int | None = WINDOW_POLL_NS
) -> tuple[int | None, bool]:
    """At an instruction boundary: fire due timers, inject the pending vector if the CPU can take it.

    Returns when to look again (clock ns, None: no need) and whether an interrupt still waits for the
    guest to open its window (IF clear, a shadow, or a second request behind the one just injected).
    While one waits, the time to look again is at most `poll_ns` away; None for a CPU that stops by
    itself when the window opens.
    """
    deadline = fire_due_timers(chipset)
    source = chipset.interrupts
    if source is None or source.pending_vector() is None:
        return deadline, False
    if cpu.interruptible():
        cpu.inject_interrupt(source.acknowledge())
        if source.pending_vector() is None:
            return deadline, False
    if poll_ns is None:
        return deadline, True
    soon = chipset.clock.now_ns() + poll_ns
    return (soon if deadline is None else min(deadline, soon)), True


def wait_halted(chipset: Chipset, interrupts_enabled: bool, stopped: Callable[[], bool]) -> Halt:
    """HLT: with interrupts enabled, sleep until the next deadline or a wakeup until one is pending."""
    source = chipset.interrupts
    if source is None or not interrupts_enabled:
        return Halt.EXIT
    clock, wakeup = chipset.clock, chipset.wakeup
    while not stopped():
        deadline = fire_due_timers(chipset)
        if source.pending_vector() is not None:
            return Halt.RESUME
        if deadline is None and not chipset.timers:
            return Halt.EXIT
        wakeup.wait(None if deadline is None else max(deadline - clock.now_ns(), 0) / NS_PER_S)
        wakeup.clear()
    return Halt.STOPPED


__all__ = [
    "WINDOW_POLL_NS",
    "Chipset",
    "Halt",
    "InterruptPins",
    "InterruptSource",
    "fire_due_timers",
    "offer_interrupt",
    "wait_halted",
]
