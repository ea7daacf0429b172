"""A virtual machine as the kernel sees it: guest memory, in-kernel devices and its vCPUs."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from vmmio.abi import Device
from vmmio.backends.base import Backend
from vmmio.devices.clock import Clock, HostClock, Timer
from vmmio.devices.interrupt_window import InterruptSource
from vmmio.memory import GuestMemory, RamRegion, RangeMap
from vmmio.x86.paging import Walker
from vmmio.x86.state import DIRTY_ALL, CpuState

if TYPE_CHECKING:
    from vmmio.vmm.vcpu import Vcpu

BACKENDS = ("unicorn", "scripted")


class Vm:
    """Owns guest RAM (backends map it, never copy it), the in-kernel devices and the page walker.

    In-kernel devices are served without an exit (bhyve keeps its PIC, PIT, RTC and APICs there);
    everything else the guest touches outside RAM goes to userspace as a request.
    """

    def __init__(self, ram_size: int = 0, maxphyaddr: int = 46) -> None:
        self.memory = GuestMemory()
        self.ports: RangeMap[Device] = RangeMap("port range")
        self.walker = Walker(self.memory, maxphyaddr)
        self.vcpus: list[Vcpu] = []
        # Interrupts and time (a PC sets these): what INTR/INTA see, the timer devices, their clock.
        self.interrupts: InterruptSource | None = None
        self.timers: list[Timer] = []
        self.clock: Clock = HostClock()
        self.wakeup = threading.Event()  # set to end a HLT wait early (an interrupt raised elsewhere)
        if ram_size:
            self.add_ram(0, ram_size)

    def add_ram(self, gpa: int, size: int) -> RamRegion:
        """Guest RAM at [gpa, gpa+size), page-aligned; refused over anything already mapped."""
        return self.memory.add_ram(gpa, size)

    def add_mmio_device(self, gpa: int, size: int, device: Device) -> None:
        """Serve [gpa, gpa+size) in the kernel (offsets from `gpa`): such accesses never reach userspace."""
        self.memory.add_handler(gpa, size, device)

    def add_port_device(self, port: int, count: int, device: Device) -> None:
        """Serve ports [port, port+count) in the kernel, with offsets from `port`."""
        if port < 0 or port + count > 0x10000:
            raise ValueError(f"ports {port:#x}+{count} are outside 0..0xffff")
        self.ports.add(port, count, device)

    def kick(self) -> None:
        """Something may now be pending (a line raised from another thread): end HLT waits."""
        self.wakeup.set()

    def create_vcpu(
        self,
        backend: str | Backend = "unicorn",
        *,
        state: CpuState | None = None,
        rep_budget: int = 64,
    ) -> Vcpu:
        """A vCPU in `state` on an execution backend: "unicorn" (the default), "scripted" (no CPU, for
        unit tests), or a backend object already built over this Vm's memory.

        The Vm hands the backend its memory and page walker, so kernel and hardware agree on both.
        """
        from vmmio.vmm.vcpu import Vcpu

        if isinstance(backend, str):
            backend = self._backend(backend)
        if state is not None:
            backend.set_control(state.control)
            backend.set_regs(state.regs, DIRTY_ALL)
        vcpu = Vcpu(self, backend, rep_budget)
        self.vcpus.append(vcpu)
        return vcpu

    def _backend(self, name: str) -> Backend:
        if name == "unicorn":
            from vmmio.backends.unicorn import UnicornBackend

            return UnicornBackend(self.memory, self.walker)
        if name == "scripted":
            from vmmio.backends.scripted import ScriptedBackend

            return ScriptedBackend()
        raise ValueError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
