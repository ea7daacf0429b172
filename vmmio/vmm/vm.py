"""A virtual machine as the kernel sees it: guest memory, in-kernel devices and its vCPUs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmmio.abi import InstEmulReason
from vmmio.vmm.memory import GuestMemory, MmioHandler, PortHandler, RamRegion
from vmmio.vmm.paging import Walker

if TYPE_CHECKING:
    from vmmio.backends.base import Backend
    from vmmio.vmm.vcpu import Vcpu


class Vm:
    """Owns guest RAM (backends map it, never copy it) and the in-kernel MMIO and port handlers."""

    def __init__(self, ram_size: int = 0, maxphyaddr: int = 46) -> None:
        self.memory = GuestMemory()
        self.ports: dict[int, PortHandler] = {}
        self.walker = Walker(self.memory, maxphyaddr, int(InstEmulReason.TRANSLATION_FAILED))
        self.vcpus: list[Vcpu] = []
        if ram_size:
            self.add_ram(0, ram_size)

    def add_ram(self, gpa: int, size: int) -> RamRegion:
        return self.memory.add_ram(gpa, size)

    def add_mmio_handler(self, gpa: int, size: int, handler: MmioHandler) -> None:
        """Serve [gpa, gpa+size) in the kernel: such accesses never reach userspace."""
        self.memory.add_handler(gpa, size, handler)

    def add_port_handler(self, port: int, count: int, handler: PortHandler) -> None:
        for p in range(port, port + count):
            if p in self.ports or not 0 <= p <= 0xFFFF:
                raise ValueError(f"port {p:#x} is taken or out of range")
            self.ports[p] = handler

    def create_vcpu(self, backend: Backend) -> Vcpu:
        from vmmio.vmm.vcpu import Vcpu

        vcpu = Vcpu(self, backend)
        self.vcpus.append(vcpu)
        return vcpu
