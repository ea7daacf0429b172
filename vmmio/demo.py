"""`make demo`: a 64-bit guest's MMIO and port accesses, emulated exit by exit.

The scripted backend plays the hardware: it reports the nested page fault (or I/O exit) the CPU would
raise for each instruction. The kernel fetches, decodes and emulates; every device access crosses the
boundary as a plain request that a small userspace device model answers.
"""

from __future__ import annotations

from dataclasses import dataclass

from vmmio.abi import (
    FulfillMmio,
    InoutExit,
    InstEmulExit,
    MmioExit,
    VmEntry,
    VmExit,
    pack_exit,
)
from vmmio.backends.base import IoEvent, NpfEvent
from vmmio.backends.scripted import ScriptedBackend
from vmmio.vmm.vm import Vm
from vmmio.x86.decode import decode
from vmmio.x86.format import format_insn
from vmmio.x86.insn import Insn
from vmmio.x86.pagetables import PAGE_1G, PageTables
from vmmio.x86.regs import GPR_NAMES
from vmmio.x86.state import Regs, long_mode_control

CODE = 0x1000
BUF = 0x20_0000
DEVICE = 0xC000_0000
RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI = range(8)


@dataclass
class Step:
    what: str
    code: str
    gprs: dict[int, int]
    fault: int | None = DEVICE  # the GPA the hardware reports, or None for a port I/O exit
    port: tuple[int, int, bool] = (0, 1, True)


STEPS = [
    Step("read a device register", "8b4308", {RBX: DEVICE}),
    Step("write a control register", "c7431001000000", {RBX: DEVICE}),
    Step("read-modify-write: the read, then the write", "810b80000000", {RBX: DEVICE}),
    Step("rep movsq device -> RAM: one exit per iteration", "f348a5", {RSI: DEVICE, RDI: BUF, RCX: 3}),
    Step("movsq device -> device: source first", "48a5", {RSI: DEVICE, RDI: DEVICE + 0x100}),
    Step("a qword across a page boundary: split in address order", "488b83fd0f0000", {RBX: DEVICE}),
    Step("push qword [device] onto a stack in RAM", "ff33", {RBX: DEVICE, RSP: BUF + 0x1000}),
    Step("out dx, al", "ee", {RDX: 0x3F8, RAX: 0x41}, fault=None, port=(0x3F8, 1, False)),
    Step("in al, dx", "ec", {RDX: 0x3FD}, fault=None, port=(0x3FD, 1, True)),
    Step("not emulated: handed to userspace as INST_EMUL", "0f5803", {RBX: DEVICE}),
    Step("non-canonical address: #GP(0) injected, no exit", "8b03", {RBX: 1 << 63}),
]


class Registers:
    """A userspace device model: 8 KiB of registers that read back what was written."""

    def __init__(self) -> None:
        self.mem = bytearray(range(256)) * 32

    def serve(self, ex: MmioExit) -> FulfillMmio:
        off = ex.gpa - DEVICE
        if ex.is_write:
            self.mem[off : off + ex.size] = ex.data.to_bytes(ex.size, "little")
            return ex.fulfill()
        return ex.fulfill(int.from_bytes(self.mem[off : off + ex.size], "little"))


def describe(ex: VmExit) -> str:
    if isinstance(ex, MmioExit):
        rw = f"write {ex.data:#x}" if ex.is_write else "read"
        return f"MMIO  gpa={ex.gpa:#x} size={ex.size} {rw}"
    if isinstance(ex, InoutExit):
        io = "in" if ex.is_in else f"out {ex.data:#x}"
        return f"INOUT port={ex.port:#x} size={ex.size} {io}"
    if isinstance(ex, InstEmulExit):
        return f"INST_EMUL rip={ex.rip:#x} bytes={ex.insn.hex()} reason={ex.reason.name}"
    return type(ex).__name__


def main() -> None:
    vm = Vm(4 << 20)
    pt = PageTables(0x10_0000)
    for n in range(4):
        pt.map(n * PAGE_1G, n * PAGE_1G, PAGE_1G)
    for gpa, pte in pt.entries.items():
        vm.memory.write_int(gpa, 8, pte)
    backend = ScriptedBackend(Regs(), long_mode_control(pt.root))
    vcpu = vm.create_vcpu(backend)
    device = Registers()

    print("vmmio demo: a 64-bit guest touching a device at", hex(DEVICE))
    print("kernel -> userspace exits are marked '->', userspace answers '<-'.\n")
    for n, step in enumerate(STEPS, 1):
        code = bytes.fromhex(step.code)
        vm.memory.write(CODE, code + b"\xf4" * 15)
        backend.regs = Regs(rip=CODE)
        for reg, value in step.gprs.items():
            backend.regs.gprs[reg] = value
        backend.injected.clear()
        before = backend.regs.copy()
        insn = decode(code, 64)
        text = format_insn(insn) if isinstance(insn, Insn) else str(insn)
        print(f"[{n}] {step.what}\n    {code.hex(' '):24} {text}")
        backend.events.append(NpfEvent(step.fault) if step.fault is not None else IoEvent(*step.port))

        entry: VmEntry | None = None
        while True:
            ex = vcpu.run(entry)
            if isinstance(ex, MmioExit):
                entry = device.serve(ex)
                answer = "" if ex.is_write else f"   <- {entry.data:#x}"
            elif isinstance(ex, InoutExit):
                entry = ex.fulfill(0x60 if ex.is_in else None)
                answer = f"   <- {entry.data:#x}" if ex.is_in else ""
            else:
                if not isinstance(ex, InstEmulExit):
                    break
                answer = ""
            print(f"    -> {describe(ex):46} ({len(pack_exit(ex))}-byte record){answer}")
            if isinstance(ex, InstEmulExit):
                break
        for vector, code_, cr2 in backend.injected:
            print(f"    injected vector {vector} error code {code_} cr2 {cr2}")
        changed = [
            f"{GPR_NAMES[8][r]}={v:#x}" for r, v in enumerate(backend.regs.gprs) if v != before.gprs[r]
        ]
        print(f"    done: rip {before.rip:#x} -> {backend.regs.rip:#x}  {' '.join(changed)}\n")


if __name__ == "__main__":
    main()
