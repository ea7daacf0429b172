"""A 64-bit long-mode guest on the scripted backend, and a memory-like MMIO device to answer exits."""

from __future__ import annotations

from dataclasses import dataclass, field

from vmmio.abi import FulfillInout, FulfillMmio, InoutExit, MmioExit, VmEntry, VmExit
from vmmio.backends.base import IoEvent, NpfEvent
from vmmio.backends.scripted import ScriptedBackend
from vmmio.vmm.vcpu import Vcpu
from vmmio.vmm.vm import Vm
from vmmio.x86.cpuid import ALL_FEATURES, CpuidTable
from vmmio.x86.pagetables import PAGE_1G, PageTables
from vmmio.x86.regs import RFLAGS_FIXED1
from vmmio.x86.state import Regs, long_mode_control

RAM_SIZE = 4 << 20
CODE = 0x1000
DATA = 0x20_0000  # RAM data area
PT_POOL = 0x10_0000
MMIO = 0x4000_0000  # userspace device (within rip-relative reach of CODE)
KDEV = 0x5000_0000  # in-kernel device


@dataclass
class MemDevice:
    """Userspace device model that behaves like memory and records every request."""

    base: int
    size: int = 0x2000
    data: bytearray = field(default_factory=bytearray)
    trace: list[tuple[int, int, bool, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.data:
            self.data = bytearray(self.size)

    def load(self, offset: int, value: bytes) -> None:
        self.data[offset : offset + len(value)] = value

    def serve(self, ex: MmioExit) -> FulfillMmio:
        off = ex.gpa - self.base
        assert off >= 0 and off + ex.size <= self.size, f"access outside the device: {ex}"
        if ex.is_write:
            self.data[off : off + ex.size] = ex.data.to_bytes(ex.size, "little")
            self.trace.append((ex.gpa, ex.size, True, ex.data))
            return ex.fulfill()
        value = int.from_bytes(self.data[off : off + ex.size], "little")
        self.trace.append((ex.gpa, ex.size, False, value))
        return ex.fulfill(value)


@dataclass
class PortDevice:
    """Ports answering IN with a fixed pattern and recording OUTs."""

    in_value: int = 0xA5A5A5A5
    trace: list[tuple[int, int, bool, int]] = field(default_factory=list)

    def serve(self, ex: InoutExit) -> FulfillInout:
        if ex.is_in:
            value = self.in_value & ((1 << (8 * ex.size)) - 1)
            self.trace.append((ex.port, ex.size, True, value))
            return ex.fulfill(value)
        self.trace.append((ex.port, ex.size, False, ex.data))
        return ex.fulfill()


class Guest:
    """Identity-mapped 64-bit guest (four 1 GiB pages) with code at CODE."""

    def __init__(
        self,
        code: bytes,
        gprs: dict[int, int] | None = None,
        rflags: int = RFLAGS_FIXED1,
        cpuid: CpuidTable = ALL_FEATURES,
    ) -> None:
        self.vm = Vm(RAM_SIZE)
        self.pt = PageTables(PT_POOL)
        for n in range(4):
            self.pt.map(n * PAGE_1G, n * PAGE_1G, PAGE_1G)
        self.write_tables()
        self.vm.memory.write(CODE, code)
        regs = Regs(rip=CODE, rflags=rflags)
        for n, v in (gprs or {}).items():
            regs.gprs[n] = v
        self.backend = ScriptedBackend(regs, long_mode_control(self.pt.root), cpuid=cpuid)
        self.vcpu: Vcpu = self.vm.create_vcpu(self.backend)
        self.device = MemDevice(MMIO)
        self.ports = PortDevice()
        self.code_len = len(code)

    def write_tables(self) -> None:
        for gpa, entry in self.pt.entries.items():
            self.vm.memory.write_int(gpa, 8, entry)

    @property
    def regs(self) -> Regs:
        return self.backend.regs

    def fault(self, gpa: int) -> None:
        self.backend.events.append(NpfEvent(gpa))

    def io(self, port: int, size: int, is_in: bool) -> None:
        self.backend.events.append(IoEvent(port, size, is_in))

    def run_to_halt(self, limit: int = 10_000) -> list[VmExit]:
        """Run, answering every MMIO/INOUT exit from the devices, until a different exit; return all."""
        exits: list[VmExit] = []
        entry: VmEntry | None = None
        for _ in range(limit):
            ex = self.vcpu.run(entry)
            exits.append(ex)
            if isinstance(ex, MmioExit):
                entry = self.device.serve(ex)
            elif isinstance(ex, InoutExit):
                entry = self.ports.serve(ex)
            else:
                return exits
        raise AssertionError("guest did not stop")
