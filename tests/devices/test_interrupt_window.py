"""The rules both vCPUs follow at an instruction boundary and in HLT (vmmio.devices.interrupt_window),
against a chipset and a CPU reduced to what the rules see."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from vmmio.devices.clock import Timer, VirtualClock
from vmmio.devices.interrupt_window import (
    WINDOW_POLL_NS,
    Halt,
    InterruptSource,
    fire_due_timers,
    offer_interrupt,
    wait_halted,
)


class Requests:
    """An interrupt controller with a queue of requested vectors, first served first."""

    def __init__(self, *vectors: int) -> None:
        self.queue = list(vectors)
        self.acked: list[int] = []

    def pending_vector(self) -> int | None:
        return self.queue[0] if self.queue else None

    def acknowledge(self) -> int:
        self.acked.append(self.queue.pop(0))
        return self.acked[-1]


class OneShot:
    """A timer that requests `vector` once, at `at` ns."""

    def __init__(self, clock: VirtualClock, source: Requests, at: int, vector: int = 0x30) -> None:
        self.clock, self.source, self.at, self.vector = clock, source, at, vector
        self.updates = 0

    def next_deadline_ns(self) -> int | None:
        return self.at if self.at >= 0 else None

    def update(self) -> None:
        self.updates += 1
        if 0 <= self.at <= self.clock.now_ns():
            self.source.queue.append(self.vector)
            self.at = -1


@dataclass
class Chip:
    """A chipset: `Vm`'s four attributes and nothing else."""

    interrupts: InterruptSource | None
    clock: VirtualClock = field(default_factory=VirtualClock)
    timers: Sequence[Timer] = ()
    wakeup: threading.Event = field(default_factory=threading.Event)


@dataclass
class Cpu:
    can_take: bool = True
    injected: list[int] = field(default_factory=list)

    def interruptible(self) -> bool:
        return self.can_take

    def inject_interrupt(self, vector: int) -> None:
        self.injected.append(vector)


def test_a_pending_vector_is_injected_when_the_cpu_can_take_it() -> None:
    source = Requests(0x30)
    cpu = Cpu()
    assert offer_interrupt(Chip(source), cpu) == (None, False)
    assert cpu.injected == source.acked == [0x30]


def test_a_vector_the_cpu_cannot_take_stays_requested_and_is_polled_for() -> None:
    source = Requests(0x30)
    chip = Chip(source, VirtualClock(5_000))
    cpu = Cpu(can_take=False)
    assert offer_interrupt(chip, cpu) == (5_000 + WINDOW_POLL_NS, True)
    assert cpu.injected == source.acked == []


def test_a_cpu_that_reports_the_window_itself_is_not_polled() -> None:
    assert offer_interrupt(Chip(Requests(0x30)), Cpu(can_take=False), poll_ns=None) == (None, True)


def test_one_vector_per_boundary_and_the_next_is_polled_for() -> None:
    source = Requests(0x30, 0x31)
    cpu = Cpu()
    assert offer_interrupt(Chip(source), cpu) == (WINDOW_POLL_NS, True)
    assert cpu.injected == [0x30] and source.queue == [0x31]


def test_due_timers_fire_before_the_offer_and_the_next_deadline_comes_back() -> None:
    clock = VirtualClock(1_000)
    source = Requests()
    due, later = OneShot(clock, source, 500), OneShot(clock, source, 9_000, 0x31)
    cpu = Cpu()
    assert offer_interrupt(Chip(source, clock, [due, later]), cpu) == (9_000, False)
    assert cpu.injected == [0x30] and (due.updates, later.updates) == (1, 0)


def test_a_poll_does_not_postpone_an_earlier_deadline() -> None:
    clock = VirtualClock()
    source = Requests(0x30)
    timer = OneShot(clock, source, WINDOW_POLL_NS // 2, 0x31)
    assert offer_interrupt(Chip(source, clock, [timer]), Cpu(can_take=False)) == (WINDOW_POLL_NS // 2, True)


def test_fire_due_timers_without_timers() -> None:
    assert fire_due_timers(Chip(None)) is None


@pytest.mark.parametrize(
    ("source", "enabled"), [(None, True), (Requests(0x30), False)], ids=["no-interrupts", "if-clear"]
)
def test_hlt_that_nothing_can_wake_exits(source: Requests | None, enabled: bool) -> None:
    assert wait_halted(Chip(source), enabled, lambda: False) is Halt.EXIT


def test_hlt_with_no_timer_at_all_exits() -> None:
    assert wait_halted(Chip(Requests()), True, lambda: False) is Halt.EXIT


def test_hlt_with_a_request_pending_resumes_at_once() -> None:
    chip = Chip(Requests(0x30))
    assert wait_halted(chip, True, lambda: False) is Halt.RESUME


def test_hlt_sleeps_until_the_deadline() -> None:
    clock = VirtualClock()
    source = Requests()
    waits: list[float | None] = []

    class Wakeup(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waits.append(timeout)
            clock.advance(round((timeout or 0) * 1e9))  # the sleep, in virtual time
            return False

    chip = Chip(source, clock, [OneShot(clock, source, 2_000_000)], Wakeup())
    assert wait_halted(chip, True, lambda: False) is Halt.RESUME
    assert waits == [0.002] and source.queue == [0x30]


def test_hlt_ends_when_the_vcpu_is_stopped() -> None:
    clock = VirtualClock()
    source = Requests()
    chip = Chip(source, clock, [OneShot(clock, source, 10**15)])  # far away: only the stop ends it
    stop = threading.Event()

    def request_stop() -> None:
        stop.set()
        chip.wakeup.set()

    threading.Timer(0.05, request_stop).start()
    assert wait_halted(chip, True, stop.is_set) is Halt.STOPPED
    assert source.queue == []
