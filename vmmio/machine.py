"""Userspace glue: a machine with RAM, devices on MMIO and ports, image loading and the run loop.

This is the VMM's userspace half. It never sees decode state: it services the plain requests a vCPU
returns and answers them on the next entry. The vCPU may be vmmio's own kernel over an execution
backend, or a KVM vCPU whose MMIO exits come from Linux's emulator; both speak the same exit types.

The machine contract guests are built against (`guests/`):

    RAM             0 .. ram_size (default 32 MiB)
    page tables     0x1000 .. 0x7000: identity map of the first 4 GiB with 2 MiB pages (64-bit images)
    CPU             64-bit long mode (or flat 32-bit protected mode for ELF32), SSE enabled, IF clear
    GDT             0x800: null, 64-bit code (0x08), data (0x10), 32-bit code (0x18)
    load address    0x100000 for flat images; ELF images load at their physical addresses
    stack           top of RAM, 16-byte aligned
    UART 16550      MMIO 0xD0000000 (stride 1) and ports 0x3F8-0x3FF
    debug exit      port 0xF4 and MMIO 0xD0001000: a write ends the run with the value as status
    test device     MMIO 0xD0010000 .. 0xD0012000, memory-like
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from vmmio.abi import (
    Default,
    HltExit,
    InoutExit,
    InstEmulExit,
    MmioExit,
    ShutdownExit,
    SuspendedExit,
    VmEntry,
    VmExit,
)
from vmmio.backends.base import CR0_PE, Control, Regs, Segment, long_mode_control
from vmmio.devices import AddressMap, DebugExit, Device, GuestExit, MemoryDevice, Uart16550
from vmmio.vmm.vm import Vm
from vmmio.x86.pagetables import PAGE_2M, RW, P, PageTables

PT_BASE = 0x1000
GDT_BASE = 0x800
LOAD_ADDR = 0x10_0000
UART_MMIO = 0xD000_0000
UART_PORT = 0x3F8
DEBUG_EXIT_PORT = 0xF4
DEBUG_EXIT_MMIO = 0xD000_1000
TESTDEV_MMIO = 0xD001_0000
TESTDEV_SIZE = 0x2000
IDENTITY_LIMIT = 4 << 30

SEL_CODE64, SEL_DATA, SEL_CODE32 = 0x08, 0x10, 0x18
# SSE usable from the start, as firmware leaves it for an OS: CR0.MP|ET|NE, CR4.OSFXSR|OSXMMEXCPT.
_CR0_MP_ET_NE = 0x2 | 0x10 | 0x20
_CR4_SSE = (1 << 9) | (1 << 10)
GDT = [0, 0x00AF9A000000FFFF, 0x00CF92000000FFFF, 0x00CF9A000000FFFF]

# Unclaimed MMIO reads as all ones and ignores writes, as on a PC bus with nothing decoding the address.
UNCLAIMED = 0xFFFF_FFFF_FFFF_FFFF


class ExitSource(Protocol):
    """A vCPU as userspace sees it: vmmio's `Vcpu`, or the KVM reference vCPU."""

    def run(self, entry: VmEntry | None = None) -> VmExit: ...


@dataclass(frozen=True)
class Image:
    """A loaded guest: where to start and in which mode (32 or 64)."""

    entry: int
    bits: int


@dataclass
class RunResult:
    status: int  # the guest's exit status; 0 after HLT
    reason: str  # "exit", "hlt", "shutdown", "inst_emul", "limit"
    exits: int  # exits serviced
    detail: str = ""


def load_image(ram_write: Callable[[int, bytes], None], data: bytes, addr: int = LOAD_ADDR) -> Image:
    """Copy an ELF32/ELF64 (by its PT_LOAD segments) or a flat 64-bit binary (at `addr`) into RAM."""
    if data[:4] != b"\x7fELF":
        ram_write(addr, data)
        return Image(addr, 64)
    if len(data) < 52 or data[5] != 1:
        raise ValueError("only little-endian ELF images are supported")
    is64 = data[4] == 2
    if is64:
        entry, phoff = struct.unpack_from("<QQ", data, 24)
        phentsize, phnum = struct.unpack_from("<HH", data, 54)
    else:
        entry, phoff = struct.unpack_from("<II", data, 24)
        phentsize, phnum = struct.unpack_from("<HH", data, 42)
    for n in range(phnum):
        off = phoff + n * phentsize
        if is64:
            p_type, _flags, p_offset, _vaddr, p_paddr, p_filesz, p_memsz = struct.unpack_from(
                "<IIQQQQQ", data, off
            )
        else:
            p_type, p_offset, _vaddr, p_paddr, p_filesz, p_memsz = struct.unpack_from("<IIIIII", data, off)
        if p_type != 1:  # PT_LOAD
            continue
        if p_filesz > p_memsz or p_offset + p_filesz > len(data):
            raise ValueError(f"malformed ELF segment {n}")
        ram_write(p_paddr, data[p_offset : p_offset + p_filesz] + bytes(p_memsz - p_filesz))
    return Image(entry, 64 if is64 else 32)


def initial_state(image: Image, ram_size: int) -> tuple[Regs, Control]:
    """CPU state at entry: 64-bit long mode with identity paging, or flat 32-bit protected mode."""
    regs = Regs(rip=image.entry)
    regs.gprs[4] = (ram_size - 16) & ~0xF
    if image.bits == 64:
        ctl = long_mode_control(PT_BASE, SEL_CODE64)
        ctl.cr0 |= _CR0_MP_ET_NE
        ctl.cr4 |= _CR4_SSE
        code = ctl.segs[1]
    else:
        ctl = Control(cr0=CR0_PE | _CR0_MP_ET_NE, cr4=_CR4_SSE)
        code = Segment(selector=SEL_CODE32, limit=0xFFFF_FFFF, type=11, db=True, g=True)
    data = [Segment(selector=SEL_DATA, limit=0xFFFF_FFFF, type=3, db=True, g=True) for _ in range(6)]
    ctl.segs = [data[0], code, data[2], data[3], data[4], data[5]]
    return regs, ctl


def page_tables() -> dict[int, int]:
    """The identity map of the first 4 GiB, as {physical address: entry}."""
    pt = PageTables(PT_BASE)
    for addr in range(0, IDENTITY_LIMIT, PAGE_2M):
        pt.map(addr, addr, PAGE_2M, P | RW)
    return pt.entries


@dataclass
class Machine:
    """RAM, the default devices, a loaded image and a vCPU, with the loop that services its exits."""

    ram_size: int = 32 << 20
    uart_sink: Callable[[bytes], None] | None = None
    mmio: AddressMap = field(default_factory=AddressMap)
    ports: AddressMap = field(default_factory=AddressMap)

    def __post_init__(self) -> None:
        self.vm = Vm(self.ram_size)
        self.uart = Uart16550() if self.uart_sink is None else Uart16550(self.uart_sink)
        self.testdev = MemoryDevice(TESTDEV_SIZE)
        debug = DebugExit()
        self.mmio.add(UART_MMIO, 0x1000, self.uart)
        self.mmio.add(DEBUG_EXIT_MMIO, 0x1000, debug)
        self.mmio.add(TESTDEV_MMIO, TESTDEV_SIZE, self.testdev)
        self.ports.add(UART_PORT, 8, self.uart)
        self.ports.add(DEBUG_EXIT_PORT, 1, debug)

    def load(self, data: bytes, addr: int = LOAD_ADDR) -> Image:
        """Load an image and the structures the entry state needs (GDT, page tables)."""
        mem = self.vm.memory
        for n, desc in enumerate(GDT):
            mem.write_int(GDT_BASE + 8 * n, 8, desc)
        for gpa, entry in page_tables().items():
            mem.write_int(gpa, 8, entry)
        return load_image(mem.write, data, addr)

    def vcpu(self, image: Image, backend: str = "unicorn") -> ExitSource:
        """A vCPU at the image's entry state on the named backend ("unicorn" or "kvm")."""
        regs, ctl = initial_state(image, self.ram_size)
        gdtr = (GDT_BASE, 8 * len(GDT) - 1)
        if backend == "unicorn":
            from vmmio.backends.unicorn import UnicornBackend

            hw = UnicornBackend(self.vm.memory, walker=self.vm.walker)
            hw.set_control(ctl, gdtr=gdtr, idtr=(0, 0xFFF))
            hw.set_regs(regs, (1 << 18) - 1)
            return self.vm.create_vcpu(hw)
        if backend == "kvm":
            from vmmio.backends.kvm import KvmVcpu

            return KvmVcpu(self.vm.memory, regs, ctl, gdtr=gdtr, idtr=(0, 0xFFF), ports=self.vm.ports)
        raise ValueError(f"unknown backend {backend!r} (choose unicorn or kvm)")

    def service(self, ex: MmioExit | InoutExit) -> VmEntry:
        """Answer one request from the device it addresses (raises GuestExit for the debug device)."""
        if isinstance(ex, MmioExit):
            hit, write = self.mmio.find(ex.gpa), ex.is_write
        else:
            hit, write = self.ports.find(ex.port), not ex.is_in
        if write:
            if hit is not None:
                hit[0].write(hit[1], ex.size, ex.data)
            return ex.fulfil()
        value = hit[0].read(hit[1], ex.size) if hit is not None else UNCLAIMED
        return ex.fulfil(value & ((1 << (8 * ex.size)) - 1))

    def run(
        self, vcpu: ExitSource, trace: Callable[[VmExit], None] | None = None, max_exits: int = 0
    ) -> RunResult:
        """Run until the guest exits, halts, shuts down, or needs an instruction vmmio cannot emulate."""
        entry: VmEntry = Default()
        exits = 0
        while not max_exits or exits < max_exits:
            ex = vcpu.run(entry)
            exits += 1
            if trace is not None:
                trace(ex)
            if isinstance(ex, MmioExit | InoutExit):
                try:
                    entry = self.service(ex)
                except GuestExit as done:
                    return RunResult(done.status, "exit", exits)
            elif isinstance(ex, SuspendedExit):
                entry = Default()
            else:
                return _final(ex, exits)
        return RunResult(0x7D, "limit", exits, f"stopped after {max_exits} exits")


def _final(ex: HltExit | ShutdownExit | InstEmulExit, exits: int) -> RunResult:
    """How a run ends on an exit userspace cannot answer."""
    if isinstance(ex, HltExit):
        return RunResult(0, "hlt", exits)
    if isinstance(ex, ShutdownExit):
        return RunResult(0x7F, "shutdown", exits, "triple fault")
    return RunResult(
        0x7E, "inst_emul", exits, f"rip={ex.rip:#x} bytes={ex.insn.hex()} reason={ex.reason.name}"
    )


__all__ = ["Device", "ExitSource", "Image", "Machine", "RunResult", "initial_state", "load_image"]
