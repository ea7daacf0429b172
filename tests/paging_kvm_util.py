"""Guests for the KVM page-walk cross-check (tests/test_paging_kvm.py): one access through given tables.

The page tables under test are built in guest RAM by test_paging's `Tables`; this module adds what the
guest needs around them and runs it on `KvmVcpu`. Everything here is identity-mapped by the same
tables, away from the translation under test (the system pages use root entry 0; the address under
test never does):

    0x1000 GDT      null, kernel code (0x08), kernel data (0x10), user code (0x1B), user data (0x23),
                    TSS (0x28)
    0x2000 IDT      32 interrupt gates; #PF on IST1 (64-bit), the rest on RSP0 / the current stack
    0x3000 TSS      RSP0/ESP0 0x7000, IST1 0x8000
    0x4000 kernel   +0x000 entry stub: LTR, then `jmp rcx` (CPL 0) or IRET to CPL 3 at rcx;
                    +0x100/+0x120/+0x140 the access (read [rbx] / write [rbx] / jmp rbx);
                    +0x400 #PF handler; +0x800 + 16 * vector: the other exception handlers
    0x5000 user     the same three access snippets, in a user page
    0x6000, 0x7000  kernel stack, #PF stack
    0xD0001000      the machine's debug-exit MMIO page, mapped user-writable: reports from code that may
                    run at CPL 3 (this KVM runs guest user mode with IOPL 0 whatever IRET loaded, as
                    PUSHF there shows, so port I/O at CPL 3 raises #GP)

Exception handlers report through ports, so they depend on no translation of their own: the #PF
handler writes the vector to port 0xE0, then the error code (0xE4) and CR2 (0xE8 low half, 0xEC high
half); any other exception writes only its vector. A fetch lands on code that writes the physical
address it was placed at to the report page. An access that completes without a device exit (it hit
RAM) writes NO_EXIT there. A successful data access ends at its MMIO exit, whose GPA is the answer.

The 32-bit variant (PAE and 32-bit paging) could only be tried with paging off on the PVM host this
was written on, which runs no 32-bit paging: there the ring-0 accesses, landing and #PF report work,
and IRETD to ring 3 ends in a KVM emulation failure, so its CPL-3 path is unproven.
"""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kvm_util import deadline
from test_paging import K4, RW, US, P, Tables

from vmmio.abi import HltExit, InoutExit, InstEmulExit, MmioExit, ShutdownExit, VmExit
from vmmio.machine import DEBUG_EXIT_MMIO
from vmmio.memory import GuestMemory
from vmmio.reference.kvm import KVM_DEVICE, KVM_GET_SUPPORTED_CPUID, KvmError, KvmExitError, KvmVcpu
from vmmio.x86.state import Control, CpuState, Regs, Segment

GDT, IDT, TSS, KCODE, UCODE = 0x1000, 0x2000, 0x3000, 0x4000, 0x5000
SYSTEM_PAGES = (GDT, IDT, TSS, KCODE, UCODE, 0x6000, 0x7000)
KSTACK, RSP0, IST1 = 0x6800, 0x7000, 0x8000
SEL_KCODE, SEL_KDATA, SEL_UCODE, SEL_UDATA, SEL_TSS = 0x08, 0x10, 0x1B, 0x23, 0x28
READ_AT, WRITE_AT, FETCH_AT = 0x100, 0x120, 0x140  # snippet offsets in the kernel and user code pages
PF_HANDLER, HANDLERS = 0x400, 0x800

PORT_VECTOR, PORT_EC, PORT_CR2_LO, PORT_CR2_HI = 0xE0, 0xE4, 0xE8, 0xEC
REPORT_MMIO = DEBUG_EXIT_MMIO
NO_EXIT = 0xFFFF_FFFF  # never a landing address: those are in RAM
RFLAGS_AC = 1 << 18
CR0_ET = 1 << 4

# Descriptors: 64-bit code (L) or 32-bit code (D), flat data; DPL 0 then DPL 3.
_SEGMENTS = {
    64: [0x00AF_9A00_0000_FFFF, 0x00CF_9200_0000_FFFF, 0x00AF_FA00_0000_FFFF, 0x00CF_F200_0000_FFFF],
    32: [0x00CF_9A00_0000_FFFF, 0x00CF_9200_0000_FFFF, 0x00CF_FA00_0000_FFFF, 0x00CF_F200_0000_FFFF],
}


def have_assembler() -> bool:
    return all(shutil.which(tool) for tool in ("as", "objcopy"))


@functools.cache
def assemble(src: str, bits: int) -> bytes:
    """Intel-syntax `src` as a flat `bits`-bit binary (no absolute references to labels)."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "g.s").write_text(f".intel_syntax noprefix\n.code{bits}\n{src}\n")
        done = subprocess.run(["as", "--64", "-o", d / "g.o", d / "g.s"], capture_output=True, text=True)
        if done.returncode:
            raise ValueError(f"as rejected the guest:\n{done.stderr}")
        subprocess.run(["objcopy", "-O", "binary", "-j", ".text", d / "g.o", d / "g.bin"], check=True)
        return (d / "g.bin").read_bytes()


def report_code(value: int, bits: int) -> bytes:
    """mov eax, value; mov [REPORT_MMIO], eax (moffs form: no register, no label)."""
    moffs = REPORT_MMIO.to_bytes(bits // 8, "little")
    return b"\xb8" + (value & 0xFFFF_FFFF).to_bytes(4, "little") + b"\xa3" + moffs


def landing_code(gpa: int, bits: int) -> bytes:
    """What a fetch runs when it lands at `gpa`: it reports `gpa` and halts."""
    return report_code(gpa, bits) + b"\xf4"


def map_system(tables: Tables) -> None:
    """Identity-map the system pages (supervisor; user code and the report page for CPL 3 too)."""
    for page in SYSTEM_PAGES:
        tables.map(page, page, K4, P | RW if page != UCODE else P | US)
    tables.map(REPORT_MMIO, REPORT_MMIO, K4, P | RW | US)


# -- KVM's guest CPU ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class GuestCpu:
    """The CPUID facts that decide page walks, as KVM offers them to a vCPU (KvmVcpu sets them all)."""

    maxphyaddr: int
    nx: bool
    page1gb: bool
    smep: bool
    smap: bool
    pku: bool
    la57: bool


@functools.cache
def guest_cpu() -> GuestCpu:
    """KVM_GET_SUPPORTED_CPUID, the leaves KvmVcpu hands its vCPU unchanged."""
    fd = os.open(KVM_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    try:
        nent = 256
        buf = bytearray(8 + 40 * nent)
        struct.pack_into("<I", buf, 0, nent)
        fcntl.ioctl(fd, KVM_GET_SUPPORTED_CPUID, buf, True)
    finally:
        os.close(fd)
    leaves: dict[tuple[int, int], tuple[int, int, int, int]] = {}
    for n in range(struct.unpack_from("<I", buf)[0]):
        function, index, _flags, eax, ebx, ecx, edx = struct.unpack_from("<7I", buf, 8 + 40 * n)
        leaves[(function, index)] = (eax, ebx, ecx, edx)
    _, ebx7, ecx7, _ = leaves.get((7, 0), (0, 0, 0, 0))
    edx_ext = leaves.get((0x8000_0001, 0), (0, 0, 0, 0))[3]
    maxphyaddr = leaves.get((0x8000_0008, 0), (36, 0, 0, 0))[0] & 0xFF
    return GuestCpu(
        maxphyaddr=maxphyaddr,
        nx=bool(edx_ext >> 20 & 1),
        page1gb=bool(edx_ext >> 26 & 1),
        smep=bool(ebx7 >> 7 & 1),
        smap=bool(ebx7 >> 20 & 1),
        pku=bool(ecx7 >> 3 & 1),
        la57=bool(ecx7 >> 16 & 1),
    )


# -- the guest ---------------------------------------------------------------------------------------


def _snippets(bits: int) -> dict[int, bytes]:
    """The three accesses, each followed by the no-exit report (a RAM access does not stop the guest)."""
    r = "r" if bits == 64 else "e"
    done = report_code(NO_EXIT, bits) + b"\xf4"
    return {
        READ_AT: assemble(f"mov eax, [{r}bx]", bits) + done,
        WRITE_AT: assemble(f"mov [{r}bx], eax", bits) + done,
        FETCH_AT: assemble(f"jmp {r}bx", bits),
    }


def _kernel_code(bits: int) -> bytes:
    r = "r" if bits == 64 else "e"
    entry = assemble(
        f"""
        mov ax, {SEL_TSS:#x}
        ltr ax
        test edx, edx
        jz 1f
        push {SEL_UDATA:#x}
        push 0
        push 2
        push {SEL_UCODE:#x}
        push {r}cx
        {"iretq" if bits == 64 else "iretd"}
    1:  jmp {r}cx
        """,
        bits,
    )
    cr2_high = "shr rax, 32" if bits == 64 else "xor eax, eax"
    pf = assemble(
        f"""
        mov eax, 14
        out {PORT_VECTOR:#x}, eax
        mov eax, [{r}sp]
        out {PORT_EC:#x}, eax
        mov {r}ax, cr2
        out {PORT_CR2_LO:#x}, eax
        {cr2_high}
        out {PORT_CR2_HI:#x}, eax
        hlt
        """,
        bits,
    )
    page = bytearray(0x1000)
    page[: len(entry)] = entry
    for at, code in _snippets(bits).items():
        page[at : at + len(code)] = code
    page[PF_HANDLER : PF_HANDLER + len(pf)] = pf
    for vector in range(32):
        stub = assemble(f"mov eax, {vector}\n out {PORT_VECTOR:#x}, eax\n hlt", bits)
        page[HANDLERS + 16 * vector : HANDLERS + 16 * vector + len(stub)] = stub
    return bytes(page)


def _gate(offset: int, bits: int, ist: int = 0) -> bytes:
    low = (offset & 0xFFFF) | SEL_KCODE << 16 | 0x8E << 40 | ((offset >> 16) & 0xFFFF) << 48
    if bits == 32:
        return low.to_bytes(8, "little")
    return (low | ist << 32).to_bytes(8, "little") + (offset >> 32).to_bytes(8, "little")


def write_system(memory: GuestMemory, bits: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """GDT, IDT, TSS, handlers and access snippets into RAM; returns GDTR and IDTR."""
    limit = 0x67
    tss_desc = limit | (TSS & 0xFF_FFFF) << 16 | 0x89 << 40 | ((TSS >> 24) & 0xFF) << 56
    gdt = [0, *_SEGMENTS[bits], tss_desc, TSS >> 32 if bits == 64 else 0]
    memory.write(GDT, b"".join(d.to_bytes(8, "little") for d in gdt))
    tss = bytearray(0x68)
    if bits == 64:
        struct.pack_into("<Q", tss, 4, RSP0)
        struct.pack_into("<Q", tss, 0x24, IST1)
    else:
        struct.pack_into("<II", tss, 4, RSP0, SEL_KDATA)
    struct.pack_into("<H", tss, 0x66, 0x68)  # I/O bitmap beyond the limit: none
    memory.write(TSS, bytes(tss))
    idt = b"".join(
        _gate(KCODE + (PF_HANDLER if v == 14 else HANDLERS + 16 * v), bits, 1 if v == 14 else 0)
        for v in range(32)
    )
    memory.write(IDT, idt)
    memory.write(KCODE, _kernel_code(bits))
    user = bytearray(0x1000)
    for at, code in _snippets(bits).items():
        user[at : at + len(code)] = code
    memory.write(UCODE, bytes(user))
    return (GDT, 8 * len(gdt) - 1), (IDT, len(idt) - 1)


def flat_segments(ctl: Control, bits: int) -> None:
    """Ring-0 flat segments from the GDT above, CS in the mode's code size."""
    data = Segment(selector=SEL_KDATA, limit=0xFFFF_FFFF, type=3, db=True, g=True)
    code = Segment(selector=SEL_KCODE, limit=0xFFFF_FFFF, type=11, l=bits == 64, db=bits == 32, g=True)
    ctl.segs = [data, code, data, data, data, data]


# -- running it ----------------------------------------------------------------------------------------

# What KVM did: ("mmio", gpa, size, is_write), ("landed", gpa), ("no exit",), ("fault", 14, ec, cr2),
# ("exception", vector), ("inst_emul", rip, reason), ("shutdown",), ("hlt",), ("kvm_exit", detail),
# ("rejected", detail) when KVM refused the state.
KvmOutcome = tuple[object, ...]


def run_access(
    memory: GuestMemory, ctl: Control, bits: int, la: int, access: str, cpl: int, ac: bool
) -> KvmOutcome:
    """Run the guest on KVM: from ring 0 (or ring 3 via IRET) do `access` ("read"/"write"/"fetch") at `la`.

    `ctl` holds the paging state (CR0/CR3/CR4/EFER); the vCPU gets it with the flat ring-0 segments.
    The system structures must already be in RAM (`write_system`) and mapped by the tables at CR3.
    """
    gdtr, idtr = (GDT, 8 * 7 - 1), (IDT, 32 * (16 if bits == 64 else 8) - 1)
    ctl = dataclasses.replace(ctl, cr0=ctl.cr0 | CR0_ET)
    flat_segments(ctl, bits)
    at = {"read": READ_AT, "write": WRITE_AT, "fetch": FETCH_AT}[access]
    regs = Regs(rip=KCODE, rflags=0x2 | (RFLAGS_AC if ac else 0))
    regs.gprs[0] = 0x5AC3_9E71  # eax: what a write stores
    regs.gprs[1] = (UCODE if cpl == 3 else KCODE) + at  # rcx: where the stub goes
    regs.gprs[2] = int(cpl == 3)  # rdx
    regs.gprs[3] = la  # rbx
    regs.gprs[4] = KSTACK
    try:
        ctl.gdtr, ctl.idtr = gdtr, idtr
        vcpu = KvmVcpu(memory, CpuState(regs, ctl))
    except KvmError as err:
        return ("rejected", str(err))
    try:
        held = vcpu.get_control()
        if (held.cr0, held.cr4, held.efer) != (ctl.cr0, ctl.cr4, ctl.efer):
            return ("rejected", f"KVM holds cr0={held.cr0:#x} cr4={held.cr4:#x} efer={held.efer:#x}")
        with deadline(10.0):
            return _collect(vcpu)
    finally:
        vcpu.close()


def _first(ex: VmExit) -> KvmOutcome | None:
    """The outcome an exit gives on its own; None for the start of an exception report."""
    if isinstance(ex, MmioExit):
        if ex.gpa == REPORT_MMIO and ex.is_write:
            return ("no exit",) if ex.data == NO_EXIT else ("landed", ex.data)
        return ("mmio", ex.gpa, ex.size, ex.is_write)
    if isinstance(ex, InoutExit) and not ex.is_in and ex.port == PORT_VECTOR:
        return None
    if isinstance(ex, InstEmulExit):
        return ("inst_emul", ex.rip, ex.reason.name)
    if isinstance(ex, ShutdownExit):
        return ("shutdown",)
    if isinstance(ex, HltExit):
        return ("hlt",)
    return ("unexpected", repr(ex))


def _collect(vcpu: KvmVcpu) -> KvmOutcome:
    try:
        ex = vcpu.run()
        outcome = _first(ex)
        if outcome is not None:
            return outcome
        assert isinstance(ex, InoutExit)
        if ex.data != 14:
            return ("exception", ex.data)
        values = []
        for port in (PORT_EC, PORT_CR2_LO, PORT_CR2_HI):
            ex = vcpu.run(ex.fulfill())
            if not isinstance(ex, InoutExit) or ex.port != port:
                return ("unexpected", f"#PF report, port {port:#x}", repr(ex))
            values.append(ex.data)
    except KvmExitError as err:
        return ("kvm_exit", str(err))
    return ("fault", 14, values[0], values[1] | values[2] << 32)
