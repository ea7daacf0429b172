"""External interrupts and time in the kernel (vmm/interrupts.py, Vcpu's interrupt window and HLT wait),
on the scripted backend with a virtual clock: every decision is visible and reproducible."""

from __future__ import annotations

import threading

from vmmio.abi import HltExit, SuspendedExit
from vmmio.backends.base import HltEvent, StoppedEvent
from vmmio.backends.scripted import ScriptedBackend
from vmmio.devices.clock import VirtualClock
from vmmio.devices.irq import IrqLine
from vmmio.devices.lapic import LVT_LINT0, LVT_MASKED, LocalApic
from vmmio.devices.pic import PicPair
from vmmio.devices.pit import Pit8254
from vmmio.vmm.interrupts import LVT_EXTINT, PcInterrupts
from vmmio.vmm.vcpu import WINDOW_POLL_NS
from vmmio.vmm.vm import Vm
from vmmio.x86.regs import IF
from vmmio.x86.state import Regs, long_mode_control

VECTOR = 0x30


class Line:
    """An interrupt source with one request: what the 8259 does, reduced to its contract."""

    def __init__(self) -> None:
        self.vector: int | None = None
        self.acked: list[int] = []

    def pending_vector(self) -> int | None:
        return self.vector

    def acknowledge(self) -> int:
        assert self.vector is not None
        self.acked.append(self.vector)
        vector, self.vector = self.vector, None
        return vector


class Deadline:
    """A timer that raises `line` once, at `at_ns`."""

    def __init__(self, clock: VirtualClock, line: Line, at_ns: int) -> None:
        self.clock, self.line, self.at = clock, line, at_ns
        self.updates = 0

    def next_deadline_ns(self) -> int | None:
        return self.at

    def update(self) -> None:
        self.updates += 1
        if self.at is not None and self.clock.now_ns() >= self.at:
            self.line.vector = VECTOR
            self.at = None  # type: ignore[assignment]


def machine(events: list[object], rflags: int = IF | 2) -> tuple[Vm, ScriptedBackend, Line, VirtualClock]:
    vm = Vm(1 << 20)
    line = Line()
    clock = VirtualClock()
    vm.interrupts, vm.clock = line, clock
    backend = ScriptedBackend(Regs(rip=0x1000, rflags=rflags), long_mode_control(0x10000), events)  # type: ignore[arg-type]
    return vm, backend, line, clock


def test_a_pending_interrupt_is_injected_when_the_guest_can_take_it() -> None:
    vm, backend, line, _ = machine([HltEvent()], rflags=2)
    vcpu = vm.create_vcpu(backend)
    line.vector = VECTOR
    assert vcpu.run() == HltExit()  # IF clear: HLT ends the run, nothing was injected
    assert backend.interrupts == [] and line.acked == []
    assert backend.timer == WINDOW_POLL_NS  # but the kernel looks again soon
    backend.regs.rflags = IF | 2
    backend.events.append(StoppedEvent())
    assert vcpu.run() == SuspendedExit()
    assert backend.interrupts == [VECTOR] and line.acked == [VECTOR]


def test_the_sti_shadow_holds_an_interrupt_back() -> None:
    vm, backend, line, _ = machine([StoppedEvent(timer=True), StoppedEvent()])
    vcpu = vm.create_vcpu(backend)
    line.vector = VECTOR
    backend.shadow = True
    original_run = backend.run

    def run_then_leave_the_shadow(**kw: int | None) -> object:
        event = original_run(**kw)
        backend.shadow = False  # one instruction later
        return event

    backend.run = run_then_leave_the_shadow  # type: ignore[method-assign,assignment]
    assert vcpu.run() == SuspendedExit()
    assert backend.interrupts == [VECTOR]  # not before the guest left the shadow
    assert backend.runs == 2


def test_due_timers_raise_their_line_and_the_next_deadline_is_armed() -> None:
    vm, backend, line, clock = machine([StoppedEvent(timer=True), StoppedEvent()])
    timer = Deadline(clock, line, 5_000)
    vm.timers = [timer]
    vcpu = vm.create_vcpu(backend)
    original_run = backend.run

    def run_for_a_while(**kw: int | None) -> object:
        clock.advance(backend.timer or 0)  # the guest runs until the armed deadline
        return original_run(**kw)

    backend.run = run_for_a_while  # type: ignore[method-assign,assignment]
    assert vcpu.run() == SuspendedExit()
    assert backend.interrupts == [VECTOR]
    assert clock.now_ns() == 5_000 and timer.updates == 1


def test_hlt_with_interrupts_enabled_waits_for_the_next_deadline() -> None:
    vm, backend, line, clock = machine([HltEvent(), StoppedEvent()])
    vm.timers = [Deadline(clock, line, 1_000_000)]
    vcpu = vm.create_vcpu(backend)
    waits: list[float | None] = []

    class Wakeup(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waits.append(timeout)
            clock.advance(int((timeout or 0) * 1e9))  # sleep as long as asked, in virtual time
            return False

    vm.wakeup = Wakeup()
    assert vcpu.run() == SuspendedExit()  # HLT did not end the run
    assert waits == [0.001]
    assert backend.interrupts == [VECTOR]


def test_hlt_with_nothing_that_could_wake_it_exits() -> None:
    vm, backend, _, _ = machine([HltEvent()])
    vcpu = vm.create_vcpu(backend)
    assert vcpu.run() == HltExit()


def test_request_stop_ends_a_hlt_wait() -> None:
    vm, backend, line, clock = machine([HltEvent()])
    vm.timers = [Deadline(clock, line, 10**15)]  # far away: only the stop can end the wait
    vcpu = vm.create_vcpu(backend)
    threading.Timer(0.05, vcpu.request_stop).start()
    assert vcpu.run() == SuspendedExit()
    assert backend.interrupts == []


def test_pc_interrupts_route_the_8259_through_lint0_or_straight_to_intr() -> None:
    clock = VirtualClock()
    pic = PicPair()
    for port, value in ((0x20, 0x11), (0x21, 0x30), (0x21, 4), (0x21, 1), (0x21, 0xFE)):
        pic.master.write(port - 0x20, 1, value)
    lapic = LocalApic(clock)
    source = PcInterrupts(pic, lapic)
    IrqLine(pic, 0).raise_()
    assert source.pending_vector() == 0x30  # APIC software-disabled: the 8259 drives INTR directly
    lapic.write(0xF0, 4, 0x1FF)  # SVR: APIC on
    lapic.write(0x350, 4, LVT_MASKED)  # LINT0 masked: the 8259 is cut off
    assert source.pending_vector() is None
    lapic.write(0x350, 4, LVT_EXTINT)
    assert lapic.lvt[LVT_LINT0] == LVT_EXTINT
    assert source.acknowledge() == 0x30
    assert source.pending_vector() is None  # in service until EOI


def test_the_pit_paces_injections_through_the_pic() -> None:
    """PIT channel 0 at ~1 kHz through the real 8259 pair: one vector per period of virtual time."""
    vm, backend, _, clock = machine([])
    pic = PicPair()
    for port, value in ((0x20, 0x11), (0x21, 0x30), (0x21, 4), (0x21, 1), (0x21, 0xFE)):
        pic.master.write(port - 0x20, 1, value)
    pit = Pit8254(clock, IrqLine(pic, 0))
    for offset, value in ((3, 0x34), (0, 1193 & 0xFF), (0, 1193 >> 8)):  # mode 2, ~1 kHz
        pit.write(offset, 1, value)
    vm.interrupts, vm.timers = PcInterrupts(pic), [pit]
    vcpu = vm.create_vcpu(backend)
    original_run = backend.run

    def run_and_eoi(**kw: int | None) -> object:
        clock.advance(backend.timer or 0)
        if backend.interrupts:
            pic.master.write(0, 1, 0x20)  # the handler's EOI
        return original_run(**kw)

    backend.run = run_and_eoi  # type: ignore[method-assign,assignment]
    backend.events.extend([StoppedEvent(timer=True)] * 50 + [StoppedEvent()])
    assert vcpu.run() == SuspendedExit()
    assert backend.interrupts == [0x30] * len(backend.interrupts)
    periods = clock.now_ns() // 1_000_000
    assert abs(len(backend.interrupts) - periods) <= 1 and len(backend.interrupts) >= 20
