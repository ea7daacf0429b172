"""A backend with no CPU: registers and control state in Python, events from a script.

It stands in for the hardware in unit tests and benchmarks of the kernel: the test queues the events
the hardware would report (a nested page fault at a GPA, an I/O exit, HLT) and inspects what the kernel
wrote back and which exceptions it injected. When the script runs out, the guest "halts".
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from vmmio.backends.base import BackendEvent, HltEvent, StoppedEvent
from vmmio.x86.cpuid import ALL_FEATURES, CpuidTable
from vmmio.x86.regs import IF
from vmmio.x86.state import DIRTY_RFLAGS, DIRTY_RIP, Control, Regs, VectorState

Injected = tuple[int, int | None, int | None]


class ScriptedBackend:
    def __init__(
        self,
        regs: Regs | None = None,
        control: Control | None = None,
        events: Iterable[BackendEvent] = (),
        *,
        vector: VectorState | None = None,
        cpuid: CpuidTable = ALL_FEATURES,
    ) -> None:
        self.regs = regs if regs is not None else Regs()
        self.control = control if control is not None else Control()
        self.events: deque[BackendEvent] = deque(events)
        self.vector = vector if vector is not None else VectorState()
        self._cpuid = cpuid
        self.injected: list[Injected] = []
        self.runs = 0
        self.stops: list[int] = []  # stop_at() requests, for tests
        self.interrupts: list[int] = []  # vectors given to inject_interrupt()
        self.timer: int | None = None  # the last set_timer() delay
        self.shadow = False  # an STI/MOV SS shadow blocks interrupts
        self.written: list[tuple[int, int, int]] = []  # ram_written() notices: (la, gpa, size)
        self._stop = False

    def run(self) -> BackendEvent:
        self.runs += 1
        if self._stop:
            self._stop = False
            return StoppedEvent()
        return self.events.popleft() if self.events else HltEvent()

    def get_regs(self) -> Regs:
        return self.regs.copy()

    def set_regs(self, regs: Regs, dirty: int) -> None:
        mine = self.regs
        for n in range(16):
            if dirty >> n & 1:
                mine.gprs[n] = regs.gprs[n]
        if dirty & DIRTY_RIP:
            mine.rip = regs.rip
        if dirty & DIRTY_RFLAGS:
            mine.rflags = regs.rflags

    def get_control(self) -> Control:
        return self.control

    def set_control(self, ctl: Control) -> None:
        self.control = ctl.copy()

    def get_vector(self) -> VectorState:
        return self.vector.copy()

    def set_vector(self, vec: VectorState) -> None:
        self.vector = vec.copy()

    @property
    def cpuid(self) -> CpuidTable:
        return self._cpuid

    def request_stop(self) -> None:
        self._stop = True

    def interruptible(self) -> bool:
        return bool(self.regs.rflags & IF) and not self.shadow

    def inject_interrupt(self, vector: int) -> None:
        self.interrupts.append(vector)

    def set_timer(self, delay_ns: int | None) -> None:
        self.timer = delay_ns

    def stop_at(self, rip: int) -> None:
        self.stops.append(rip)

    def ram_written(self, la: int, gpa: int, size: int) -> None:
        self.written.append((la, gpa, size))

    def close(self) -> None:
        pass

    def inject_exception(self, vector: int, error_code: int | None, cr2: int | None) -> None:
        self.injected.append((vector, error_code, cr2))
