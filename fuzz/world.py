"""A small 64-bit guest whose scripted "hardware" reports what the instruction at RIP would make it report.

The scripted backend runs no code, so a program is a list of instructions that all exit: each run()
looks at the instruction at RIP and reports its port I/O (IoEvent) or the page of its first memory
access (NpfEvent), as VMX would; past the last instruction it wraps to the first and reports HLT. An
injected exception is "delivered" to a handler that skips the instruction and halts (RIP moves past
it, HLT is reported), so a faulting instruction does not repeat forever. Runs listed in `quirks`, and
every run past SLICE within one `World.run`, report StoppedEvent, as a preempted CPU would: REP work
on RAM and in-kernel devices never exits by itself here, since real hardware would run it natively.
Two worlds built from the same case are identical, so one can be the reference of the other.

Guest-physical map: RAM [0, RAM_END) with code, page tables and data; userspace MMIO everywhere else
(right after RAM too, so accesses cross from RAM into a device); an in-kernel memory-like device at KDEV
with a userspace page right below it; in-kernel ports KPORT..KPORT+3. Linear = physical (1 GiB pages).
"""

from __future__ import annotations

from dataclasses import dataclass

from vmmio.abi import VmEntry, VmExit
from vmmio.backends.base import BackendEvent, HltEvent, IoEvent, NpfEvent, StoppedEvent
from vmmio.backends.scripted import ScriptedBackend
from vmmio.vmm.vcpu import Vcpu
from vmmio.vmm.vm import Vm
from vmmio.x86.decode import decode
from vmmio.x86.insn import Insn, OpMap
from vmmio.x86.pagetables import PAGE_1G, PageTables
from vmmio.x86.regs import RFLAGS_FIXED1
from vmmio.x86.state import Control, Regs, long_mode_control

RAM_END = 0x4_0000
CODE = 0x1000
PT_POOL = 0x8000
DATA = 0x2_0000
STACK = 0x3_0000
MMIO = 0x4000_0000  # userspace device window (two pages)
KDEV = 0x5000_0000  # in-kernel device (two pages); KDEV - 0x1000 is userspace
KPORT = 0x70
SLICE = 32  # hardware runs per World.run before the "time slice" ends
RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI = range(8)

_STRING_SRC = {0xA4, 0xA5, 0xA6, 0xA7, 0xAC, 0xAD, 0x6E, 0x6F}  # first access through rSI
_STRING_DST = {0xAA, 0xAB, 0xAE, 0xAF}  # through rDI
_BIT_REG = {0xA3, 0xAB, 0xB3, 0xBB}
_PORT_IMM = {0xE4: True, 0xE5: True, 0xE6: False, 0xE7: False}  # opcode -> is_in
_PORT_DX = {
    0xEC: True,
    0xED: True,
    0xEE: False,
    0xEF: False,
    0x6C: True,
    0x6D: True,
    0x6E: False,
    0x6F: False,
}


class MemDevice:
    """A memory-like device (in-kernel MMIO or ports): what is written reads back."""

    def __init__(self, size: int) -> None:
        self.data = bytearray(size)

    def read(self, offset: int, size: int) -> int:
        return int.from_bytes(self.data[offset : offset + size].ljust(size, b"\0"), "little")

    def write(self, offset: int, size: int, value: int) -> None:
        end = min(offset + size, len(self.data))
        self.data[offset:end] = value.to_bytes(size, "little")[: end - offset]


def event_for(insn: Insn, regs: Regs) -> BackendEvent:
    """The exit a CPU would report for `insn` (64-bit, flat): its port, or its first memory access."""
    op = insn.opcode if insn.opmap == OpMap.ONE else -1
    gprs = regs.gprs
    if op in _PORT_IMM or op in _PORT_DX:
        port = insn.imm & 0xFF if op in _PORT_IMM else gprs[RDX] & 0xFFFF
        return IoEvent(port, insn.width if insn.width < 8 else 4, _PORT_IMM.get(op, _PORT_DX.get(op, False)))
    mask = (1 << (8 * insn.addr_size)) - 1
    if op in _STRING_SRC:
        return NpfEvent(gprs[RSI] & mask)
    if op in _STRING_DST:
        return NpfEvent(gprs[RDI] & mask)
    if insn.mem is None or insn.mem.vsib:
        return NpfEvent(MMIO)
    if op == 0x8F and not RAM_END > gprs[RSP] >= 0:  # pop r/m: the stack is read first
        return NpfEvent(gprs[RSP])
    ea = insn.mem.effective_address(gprs, regs.rip + insn.length)
    if insn.opmap == OpMap.M0F and insn.opcode in _BIT_REG:  # a signed bit offset moves the operand
        w = insn.width
        offset = gprs[insn.reg] & ((1 << (8 * w)) - 1)
        signed = offset - (1 << (8 * w)) if offset >> (8 * w - 1) else offset
        ea = (ea + (signed >> (8 * w).bit_length() - 1) * w) & mask
    return NpfEvent(ea)


class ProgramBackend(ScriptedBackend):
    """Scripted hardware for a straight-line program at CODE (see the module docstring)."""

    def __init__(
        self, regs: Regs, control: Control, program: tuple[bytes, ...], quirks: frozenset[int]
    ) -> None:
        super().__init__(regs, control)
        self.quirks = quirks
        self.slice = SLICE
        self.delivered = 0  # injected exceptions already delivered
        self.insns: dict[int, Insn] = {}
        rip = CODE
        for code in program:
            insn = decode(code, 64)
            if isinstance(insn, Insn):
                self.insns[rip] = insn
            rip += len(code)
        self.end = rip

    def run(self) -> BackendEvent:
        self.runs += 1
        self.slice -= 1
        if self.runs in self.quirks or self.slice < 0:
            return StoppedEvent()
        insn = self.insns.get(self.regs.rip)
        if len(self.injected) > self.delivered:
            self.delivered = len(self.injected)
            self.regs.rip += insn.length if insn is not None else 0
            return HltEvent()
        if insn is None:  # past the end, or an instruction that does not decode: start over
            self.regs.rip = CODE
            return HltEvent()
        return event_for(insn, self.regs)


@dataclass
class World:
    """One vCPU over one Vm, with the pieces a snapshot compares."""

    vm: Vm
    backend: ProgramBackend
    vcpu: Vcpu
    kdev: MemDevice
    kports: MemDevice

    @classmethod
    def build(
        cls, program: tuple[bytes, ...], gprs: tuple[int, ...], rflags: int, quirks: tuple[int, ...]
    ) -> World:
        vm = Vm(RAM_END)
        pt = PageTables(PT_POOL)
        for n in range(4):
            pt.map(n * PAGE_1G, n * PAGE_1G, PAGE_1G)
        for gpa, entry in pt.entries.items():
            vm.memory.write_int(gpa, 8, entry)
        vm.memory.write(CODE, b"".join(program))
        for n in range(0, 0x200, 8):
            vm.memory.write_int(DATA + n, 8, 0x0101_0101_0101_0101 * (n // 8 + 1))
        kdev, kports = MemDevice(0x2000), MemDevice(4)
        vm.add_mmio_device(KDEV, 0x2000, kdev)
        vm.add_port_device(KPORT, 4, kports)
        regs = Regs(list((gprs + (0,) * 16)[:16]), CODE, (rflags & 0x0CD5) | RFLAGS_FIXED1)
        backend = ProgramBackend(regs, long_mode_control(pt.root), program, frozenset(quirks))
        return cls(vm, backend, vm.create_vcpu(backend), kdev, kports)

    def run(self, entry: VmEntry) -> VmExit:
        """`vcpu.run` within one time slice of the hardware."""
        self.backend.slice = SLICE
        return self.vcpu.run(entry)

    def snapshot(self) -> tuple[object, ...]:
        """Everything an entry may change: registers, control state, the pending request, RAM, the
        in-kernel devices, injected exceptions and how far the hardware script has run."""
        vcpu, backend = self.vcpu, self.backend
        return (
            vcpu.regs,
            vcpu.control,
            vcpu.pending,
            bytes(self.vm.memory.ram[0].view),
            bytes(self.kdev.data),
            bytes(self.kports.data),
            tuple(backend.injected),
            backend.runs,
        )


SNAPSHOT_PARTS = (
    "regs",
    "control",
    "pending",
    "RAM",
    "in-kernel device",
    "in-kernel ports",
    "injected",
    "runs",
)


def differences(a: tuple[object, ...], b: tuple[object, ...]) -> str:
    """Which parts of two snapshots differ, for a failure message."""
    out = []
    for name, x, y in zip(SNAPSHOT_PARTS, a, b, strict=True):
        if x != y:
            if isinstance(x, bytes) and isinstance(y, bytes):
                first = next(i for i in range(min(len(x), len(y))) if x[i] != y[i])
                out.append(
                    f"{name} at {first:#x}: {x[first : first + 8].hex()} vs {y[first : first + 8].hex()}"
                )
            else:
                out.append(f"{name}: {x} vs {y}")
    return "; ".join(out)
