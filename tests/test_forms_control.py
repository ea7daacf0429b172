"""Stack, control-transfer, segment-register and system forms, driven through the Vcpu (scripted backend).

Each row gives the instruction, the CPU mode and CPL it runs at (tests/ctl_harness.py: 64-bit,
compatibility, 32/16-bit protected, real and virtual-8086 mode, one GDT for all), the registers and device
bytes before, the exact device-visible request sequence (offset from the device, size, write?, data:
descriptor-table reads and accessed/busy-bit writes included when the GDT is the device), and what
changes: registers, RIP, RFLAGS, control state (segment registers, CPL, GDTR/IDTR, LDTR, TR, CR0), RAM;
or the exception injected (vector, error code, CR2), the state then being the state before. Values are
worked out by hand from the SDM; where vendors differ, from the host CPU (an Intel Xeon: noted).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from ctl_harness import (
    C16,
    C32,
    C32U,
    C64,
    C64NA,
    C64U,
    CLD,
    CNP,
    CODE,
    CONF,
    CS,
    D0,
    D1,
    D3,
    DEVD,
    DNA,
    DS,
    ES,
    EXPD,
    FS,
    GATE,
    GDT,
    GDT_ENTRIES,
    GDT_LIMIT,
    GS,
    HIGH,
    LDT,
    LDTD,
    MMIO,
    NPD,
    RO,
    SS,
    STACK,
    TSS,
    TSS16,
    TSSA,
    TSSB,
    XO,
    Setup,
    run,
    seg_of,
)

from vmmio.abi import HltExit, InstEmulExit, InstEmulReason
from vmmio.x86.faults import GP, NP, PF, UD
from vmmio.x86.faults import SS as SS_FAULT
from vmmio.x86.regs import CF, NT, RF, VM, ZF
from vmmio.x86.state import Control, Segment

RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI = range(8)
R9, R10 = 9, 10
W, R = True, False
A = 0x1122334455667788  # RAX before every row
SP0 = STACK + 0x100  # RSP before, unless a row puts the stack elsewhere
M = MMIO


def q(v: int) -> bytes:
    return (v & (1 << 64) - 1).to_bytes(8, "little")


def dw(v: int) -> bytes:
    return (v & 0xFFFF_FFFF).to_bytes(4, "little")


def w16(v: int) -> bytes:
    return (v & 0xFFFF).to_bytes(2, "little")


def hi_byte(sel: int) -> int:
    """The access byte of a GDT descriptor (type, S, DPL, P)."""
    return (GDT_ENTRIES[sel & ~7] >> 40) & 0xFF


@dataclass
class Row:
    name: str
    code: str
    trace: list[tuple[int, int, bool, int]] = field(default_factory=list)
    mode: str = "64"
    cpl: int = 0
    gprs: dict[int, int] = field(default_factory=dict)
    rflags: int = 0x2
    dev: dict[int, bytes] = field(default_factory=dict)
    ram: dict[int, bytes] = field(default_factory=dict)
    fault_at: int = 0
    gdt_in_device: bool = False
    control: dict[str, Any] = field(default_factory=dict)
    # expectations
    regs: dict[int, int] = field(default_factory=dict)
    rip: int | None = None  # None: just past the instruction
    flags: int | None = None  # None: unchanged
    ctl: dict[str, Any] = field(default_factory=dict)
    ram_after: dict[int, bytes] = field(default_factory=dict)
    exc: tuple[int, int | None] | tuple[int, int | None, int] | None = None
    emul: InstEmulReason | None = None


# fmt: off
STACK_ROWS = [
    Row("push rax, stack in MMIO", "50", [(0xF8, 8, W, A)], gprs={RSP: M + 0x100}, fault_at=0xF8,
        regs={RSP: M + 0xF8}),
    Row("push r9 (REX.B)", "4151", [(0xF8, 8, W, 0xDEADBEEF)], gprs={RSP: M + 0x100, R9: 0xDEADBEEF},
        fault_at=0xF8, regs={RSP: M + 0xF8}),
    Row("push ax (66): a word", "6650", [(0xFE, 2, W, 0x7788)], gprs={RSP: M + 0x100}, fault_at=0xFE,
        regs={RSP: M + 0xFE}),
    Row("push rsp pushes the value before the push", "54", [(0xF8, 8, W, M + 0x100)],
        gprs={RSP: M + 0x100}, fault_at=0xF8, regs={RSP: M + 0xF8}),
    Row("pop rax", "58", [(0x100, 8, R, 0x1111222233334444)], gprs={RSP: M + 0x100}, fault_at=0x100,
        dev={0x100: q(0x1111222233334444)}, regs={RAX: 0x1111222233334444, RSP: M + 0x108}),
    Row("pop r10w (66 REX.B): merges", "66415a", [(0x100, 2, R, 0x4444)], gprs={RSP: M + 0x100, R10: -1},
        fault_at=0x100, dev={0x100: q(0x1111222233334444)}, regs={R10: (1 << 64) - 0x10000 + 0x4444,
                                                                  RSP: M + 0x102}),
    Row("pop rsp loads the popped value", "5c", [(0x100, 8, R, 0x1234)], gprs={RSP: M + 0x100},
        fault_at=0x100, dev={0x100: q(0x1234)}, regs={RSP: 0x1234}),
    Row("pop sp (66): the popped word over the incremented RSP", "665c", [(0x100, 2, R, 0x4444)],
        gprs={RSP: M + 0x100}, fault_at=0x100, dev={0x100: q(0x4444)}, regs={RSP: M + 0x4444}),
    Row("push imm8 sign-extends", "6a80", [(0xF8, 8, W, (1 << 64) - 0x80)], gprs={RSP: M + 0x100},
        fault_at=0xF8, regs={RSP: M + 0xF8}),
    Row("push imm32 sign-extends", "6800000080", [(0xF8, 8, W, 0xFFFFFFFF80000000)],
        gprs={RSP: M + 0x100}, fault_at=0xF8, regs={RSP: M + 0xF8}),
    Row("push imm16 (66)", "66683412", [(0xFE, 2, W, 0x1234)], gprs={RSP: M + 0x100}, fault_at=0xFE,
        regs={RSP: M + 0xFE}),
    Row("push eax (32-bit)", "50", [(0xFC, 4, W, 0x55667788)], mode="32", gprs={RSP: M + 0x100},
        fault_at=0xFC, regs={RSP: M + 0xFC}),
    Row("push imm8 (32-bit)", "6aff", [(0xFC, 4, W, 0xFFFFFFFF)], mode="32", gprs={RSP: M + 0x100},
        fault_at=0xFC, regs={RSP: M + 0xFC}),
    Row("pop ecx (32-bit) zero-extends", "59", [(0x100, 4, R, 0x80000001)], mode="32",
        gprs={RSP: M + 0x100}, fault_at=0x100, dev={0x100: dw(0x80000001)},
        regs={RCX: 0x80000001, RSP: M + 0x104}),
    Row("push ax (16-bit stack, SS base LOW)", "50", [(0xFE, 2, W, 0x7788)], mode="16",
        gprs={RSP: 0x100}, fault_at=0xFE, regs={RSP: 0xFE}),
    Row("push ax with SP 0 wraps to 0xFFFE, upper RSP kept", "50", [(0xFFFE, 2, W, 0x7788)], mode="16",
        gprs={RSP: 0x1234_0000}, fault_at=0xFFFE, regs={RSP: 0x1234_FFFE}),
    Row("push eax (66) on a 16-bit stack", "6650", [(0xFC, 4, W, 0x55667788)], mode="16",
        gprs={RSP: 0x100}, fault_at=0xFC, regs={RSP: 0xFC}),
    Row("push dword [ebx] with an expand-down SS below its limit: #SS(0)", "ff33", [(0, 4, R, 0x9ABCDEF0)],
        mode="32", gprs={RSP: 0x1002}, dev={0: q(0x123456789ABCDEF0)},
        control={"segs": None}, exc=(SS_FAULT, 0)),
    Row("pushfq: RF and VM clear in the image", "9c", [(0xF8, 8, W, 0x2C3)], gprs={RSP: M + 0x100},
        rflags=0x2C3 | RF, fault_at=0xF8, regs={RSP: M + 0xF8}),
    Row("pushf (66): the low word", "669c", [(0xFE, 2, W, 0x0C93)], gprs={RSP: M + 0x100},
        rflags=0x10C93, fault_at=0xFE, regs={RSP: M + 0xFE}),
    Row("pushfd (32-bit)", "9c", [(0xFC, 4, W, 0x246)], mode="32", gprs={RSP: M + 0x100}, rflags=0x246,
        fault_at=0xFC, regs={RSP: M + 0xFC}),
    Row("popfq at CPL 0: all but VM, VIF, VIP; RF cleared", "9d", [(0x100, 8, R, (1 << 64) - 1)],
        gprs={RSP: M + 0x100}, fault_at=0x100, dev={0x100: q(-1)}, regs={RSP: M + 0x108},
        flags=0x247FD7),
    Row("popfq at CPL 3, IOPL 0: IF and IOPL kept (as on the host)", "9d", [(0x100, 8, R, (1 << 64) - 0x101)],
        cpl=3, gprs={RSP: M + 0x100}, rflags=0x202, fault_at=0x100, dev={0x100: q(-0x101)},
        regs={RSP: M + 0x108}, flags=0x244ED7),
    Row("popf (66) at CPL 3: the low word only (as on the host)", "669d", [(0x100, 2, R, 0xFEFF)], cpl=3,
        gprs={RSP: M + 0x100}, rflags=0x40202, fault_at=0x100, dev={0x100: q(0xFEFF)},
        regs={RSP: M + 0x102}, flags=0x44ED7),
    Row("popfq at CPL 3 with IOPL 3: IF changes, IOPL does not", "9d", [(0x100, 8, R, 0x202)], cpl=3,
        gprs={RSP: M + 0x100}, rflags=0x3002, fault_at=0x100, dev={0x100: q(0x202)},
        regs={RSP: M + 0x108}, flags=0x3202),
    Row("popfd at CPL 1 with IOPL 0 (32-bit): neither IF nor IOPL", "9d", [(0x100, 4, R, 0x3200)],
        mode="32", cpl=1, gprs={RSP: M + 0x100}, fault_at=0x100, dev={0x100: dw(0x3200)},
        control={"segs": "cpl1"}, regs={RSP: M + 0x104}, flags=0x2),
    Row("popf in virtual-8086 mode with IOPL 3: IOPL kept", "9d", [(0x100, 2, R, 0x0200)], mode="vm86",
        gprs={RSP: 0x100}, rflags=0x3002, fault_at=0x100, dev={0x100: q(0x0200)},
        regs={RSP: 0x102}, flags=0x3202 | VM),
    Row("popf in virtual-8086 mode with IOPL 0: #GP(0)", "9d", [], mode="vm86", gprs={RSP: 0x100},
        fault_at=0x100, exc=(GP, 0)),
    Row("pushf in virtual-8086 mode with IOPL 0: #GP(0)", "9c", [], mode="vm86", gprs={RSP: 0x100},
        fault_at=0xFE, exc=(GP, 0)),
    Row("enter 0x10, 0", "c8100000", [(0xF8, 8, W, 0x1234)], gprs={RSP: M + 0x100, RBP: 0x1234},
        fault_at=0xF8, regs={RSP: M + 0xE8, RBP: M + 0xF8}),
    Row("enter 8, 1: pushes rBP, then the frame pointer", "c8080001",
        [(0xF8, 8, W, 0x1234), (0xF0, 8, W, M + 0xF8)], gprs={RSP: M + 0x100, RBP: 0x1234}, fault_at=0xF8,
        regs={RSP: M + 0xE8, RBP: M + 0xF8}),
    Row("enter 0, 3: two frame pointers copied from the old frame, in program order", "c8000003",
        [(0xF8, 8, W, M + 0x180), (0x178, 8, R, 0xAAAA), (0xF0, 8, W, 0xAAAA), (0x170, 8, R, 0xBBBB),
         (0xE8, 8, W, 0xBBBB), (0xE0, 8, W, M + 0xF8)],
        gprs={RSP: M + 0x100, RBP: M + 0x180}, fault_at=0xF8, dev={0x170: q(0xBBBB), 0x178: q(0xAAAA)},
        regs={RSP: M + 0xE0, RBP: M + 0xF8}),
    Row("enter 4, 2 (66): words, BP merged", "66c8040002",
        [(0xFE, 2, W, 0x0180), (0x17E, 2, R, 0xAAAA), (0xFC, 2, W, 0xAAAA), (0xFA, 2, W, 0x00FE)],
        gprs={RSP: M + 0x100, RBP: M + 0x180}, fault_at=0xFE, dev={0x17E: w16(0xAAAA)},
        regs={RSP: M + 0xF6, RBP: M + 0xFE}),
    Row("enter 0, 0x21: the level is taken modulo 32", "c8000021", [(0xF8, 8, W, 0), (0xF0, 8, W, M + 0xF8)],
        gprs={RSP: M + 0x100}, fault_at=0xF8, regs={RSP: M + 0xF0, RBP: M + 0xF8}),
    Row("enter 0x20, 0: after the push, the final RSP is probed for a write (as on the host): #PF(W)",
        "c8200000", [(0x1008, 8, W, 0x1234)], gprs={RSP: HIGH + 0x2010, RBP: 0x1234}, fault_at=0x1008,
        exc=(PF, 2, HIGH + 0x1FE8)),
    Row("enter 8, 0 (32-bit)", "c8080000", [(0xFC, 4, W, 0x1234)], mode="32",
        gprs={RSP: M + 0x100, RBP: 0x1234}, fault_at=0xFC, regs={RSP: M + 0xF4, RBP: M + 0xFC}),
    Row("leave", "c9", [(0x100, 8, R, 0x5555)], gprs={RBP: M + 0x100}, fault_at=0x100,
        dev={0x100: q(0x5555)}, regs={RSP: M + 0x108, RBP: 0x5555}),
    Row("leave (66): pops BP", "66c9", [(0x100, 2, R, 0x5555)], gprs={RBP: M + 0x100}, fault_at=0x100,
        dev={0x100: q(0x5555)}, regs={RSP: M + 0x102, RBP: M + 0x5555}),
    Row("leave on a 16-bit stack: SP <- BP", "c9", [(0x100, 2, R, 0x5555)], mode="16",
        gprs={RBP: 0xABCD_0100, RSP: 0x1234_0000}, fault_at=0x100, dev={0x100: q(0x5555)},
        regs={RSP: 0x1234_0102, RBP: 0xABCD_5555}),
    Row("lock push rax: #UD", "f050", [], gprs={RSP: M + 0x100}, fault_at=0xF8, exc=(UD, None)),
]

NEAR_ROWS = [
    Row("call rel32, stack in MMIO", "e800010000", [(0xF8, 8, W, CODE + 5)], gprs={RSP: M + 0x100},
        fault_at=0xF8, regs={RSP: M + 0xF8}, rip=CODE + 0x105),
    Row("call rel32 with 66: still 64-bit (Intel; as on the host)", "66e800010000", [(0xF8, 8, W, CODE + 6)],
        gprs={RSP: M + 0x100}, fault_at=0xF8, regs={RSP: M + 0xF8}, rip=CODE + 0x106),
    Row("call rel32 (32-bit)", "e8f0ffffff", [(0xFC, 4, W, CODE + 5)], mode="32", gprs={RSP: M + 0x100},
        fault_at=0xFC, regs={RSP: M + 0xFC}, rip=CODE - 0xB),
    Row("call rel16 (16-bit) wraps IP", "e800f0", [(0xFE, 2, W, CODE + 3)], mode="16", gprs={RSP: 0x100},
        fault_at=0xFE, regs={RSP: 0xFE}, rip=(CODE + 3 + 0xF000) & 0xFFFF),
    Row("call rel32 (66, 16-bit operand size in 32-bit mode) beyond a 16-bit IP", "66e80000",
        [(0xFE, 2, W, CODE + 4)], mode="32", gprs={RSP: M + 0x100}, fault_at=0xFE, regs={RSP: M + 0xFE},
        rip=CODE + 4),
    Row("call [rbx+0x20]: operand in MMIO, stack in RAM", "ff5320", [(0x20, 8, R, CODE + 0x200)],
        dev={0x20: q(CODE + 0x200)}, fault_at=0x20, regs={RSP: SP0 - 8}, rip=CODE + 0x200,
        ram_after={SP0 - 8: q(CODE + 3)}),
    Row("call [rbx] to a non-canonical target: pushed, then #GP(0) (as on the host)", "ff13",
        [(0, 8, R, 0x0000_8000_0000_0000), (0xF8, 8, W, CODE + 2)], gprs={RSP: M + 0x100},
        dev={0: q(0x0000_8000_0000_0000)}, exc=(GP, 0)),
    Row("call rcx, stack in MMIO", "ffd1", [(0xF8, 8, W, CODE + 2)], gprs={RSP: M + 0x100, RCX: 0x7000},
        fault_at=0xF8, regs={RSP: M + 0xF8}, rip=0x7000),
    Row("call dword [bx] (66, 16-bit): beyond CS's limit, #GP(0) before the push", "66ff17",
        [(0, 4, R, 0x12345)], mode="16", gprs={RBX: 0, RSP: 0x100}, dev={0: dw(0x12345)}, exc=(GP, 0)),
    Row("jmp [rbx+0x20]", "ff6320", [(0x20, 8, R, CODE + 0x200)], dev={0x20: q(CODE + 0x200)},
        fault_at=0x20, rip=CODE + 0x200),
    Row("jmp [rbx] with 66: still 64-bit (as on the host)", "66ff23", [(0, 8, R, 0x7000)],
        dev={0: q(0x7000)}, rip=0x7000),
    Row("jmp [ebx+0x28] (32-bit)", "ff6328", [(0x28, 4, R, 0x1234)], mode="32", dev={0x28: dw(0x1234)},
        fault_at=0x28, rip=0x1234),
    Row("jmp word [ebx] (66, 32-bit mode)", "66ff23", [(0, 2, R, 0xBEEF)], mode="32",
        dev={0: q(0x1234BEEF)}, rip=0xBEEF),
    Row("ret", "c3", [(0x100, 8, R, CODE + 0x400)], gprs={RSP: M + 0x100}, fault_at=0x100,
        dev={0x100: q(CODE + 0x400)}, regs={RSP: M + 0x108}, rip=CODE + 0x400),
    Row("ret 0x10", "c21000", [(0x100, 8, R, CODE + 0x400)], gprs={RSP: M + 0x100}, fault_at=0x100,
        dev={0x100: q(CODE + 0x400)}, regs={RSP: M + 0x118}, rip=CODE + 0x400),
    Row("ret with 66: still 64-bit (as on the host)", "66c3", [(0x100, 8, R, CODE + 0x400)],
        gprs={RSP: M + 0x100}, fault_at=0x100, dev={0x100: q(CODE + 0x400)}, regs={RSP: M + 0x108},
        rip=CODE + 0x400),
    Row("ret to a non-canonical address: #GP(0), RSP kept", "c3", [(0x100, 8, R, 0x0000_8000_0000_0000)],
        gprs={RSP: M + 0x100}, fault_at=0x100, dev={0x100: q(0x0000_8000_0000_0000)}, exc=(GP, 0)),
    Row("ret (32-bit)", "c3", [(0x100, 4, R, CODE + 0x400)], mode="32", gprs={RSP: M + 0x100},
        fault_at=0x100, dev={0x100: q(CODE + 0x400)}, regs={RSP: M + 0x104}, rip=CODE + 0x400),
    Row("ret (66, 32-bit mode): a 16-bit IP", "66c3", [(0x100, 2, R, 0x1400)], mode="32",
        gprs={RSP: M + 0x100}, fault_at=0x100, dev={0x100: q(0xABCD1400)}, regs={RSP: M + 0x102},
        rip=0x1400),
    Row("ret 4 on a 16-bit stack", "c20400", [(0xFFFE, 2, R, 0x2000)], mode="16", gprs={RSP: 0xFFFE},
        fault_at=0xFFFE, dev={0xFFFE: w16(0x2000)}, regs={RSP: 0x4}, rip=0x2000),
]


def far(off: int, sel: int, w: int = 4) -> bytes:
    return off.to_bytes(w, "little") + sel.to_bytes(2, "little")


ACC = GDT + 5  # + selector: the access byte of a descriptor in the RAM GDT

FAR_ROWS = [
    Row("jmp far [rbx] m16:32 to 32-bit code: compatibility mode", "ff2b",
        [(0, 4, R, 0x2000), (4, 2, R, C32)],
        dev={0: far(0x2000, C32)}, rip=0x2000, ctl={"cs": seg_of(C32)}),
    Row("jmp far into compatibility mode clears RSP[63:32] (as on the host)", "ff2b",
        [(0, 4, R, 0x2000), (4, 2, R, C32)], gprs={RSP: 0x1234_5678_0000_1000},
        dev={0: far(0x2000, C32)}, regs={RSP: 0x1000}, rip=0x2000, ctl={"cs": C32}),
    Row("retf into compatibility mode clears RSP[63:32] after the pops", "cb",
        [(0x1100, 4, R, 0x2000), (0x1104, 4, R, C32)], gprs={RSP: HIGH + 0x2100}, fault_at=0x1100,
        dev={0x1100: dw(0x2000) + dw(C32)}, regs={RSP: 0x2108}, rip=0x2000, ctl={"cs": C32}),
    Row("jmp far m16:64 (REX.W)", "48ff2b", [(0, 8, R, 0x12_3456_7000), (8, 2, R, C64)],
        dev={0: far(0x12_3456_7000, C64, 8)}, rip=0x12_3456_7000),
    Row("jmp far m16:16 (66): offset, then selector", "66ff2b", [(0, 2, R, 0x2000), (2, 2, R, C32)],
        dev={0: far(0x2000, C32, 2)}, rip=0x2000, ctl={"cs": C32}),
    Row("jmp far to a code segment not yet accessed sets the bit", "ff2b",
        [(0, 4, R, 0x2000), (4, 2, R, C64NA)],
        dev={0: far(0x2000, C64NA)}, rip=0x2000, ctl={"cs": C64NA, "cs.type": 0xB},
        ram_after={ACC + C64NA: bytes([hi_byte(C64NA) | 1])}),
    Row("jmp far with the GDT in the device: its read and accessed-bit write are requests", "ff2b",
        [(0, 4, R, 0x2000), (4, 2, R, C64NA), (0x1000 + C64NA, 8, R, GDT_ENTRIES[C64NA]),
         (0x1000 + C64NA + 5, 1, W, hi_byte(C64NA) | 1)],
        gdt_in_device=True, dev={0: far(0x2000, C64NA)}, rip=0x2000, ctl={"cs": C64NA}),
    Row("jmp far ptr16:32 (32-bit), GDT in the device", "ea00200000" + "0800",
        [(0x1000 + C64, 8, R, GDT_ENTRIES[C64])], mode="32", gdt_in_device=True, fault_at=0x1008,
        rip=0x2000, ctl={"cs": C64}),
    Row("jmp far to selector 0: #GP(0)", "ff2b", [(0, 4, R, 0x2000), (4, 2, R, 3)], dev={0: far(0x2000, 3)},
        exc=(GP, 0)),
    Row("jmp far to a data segment: #GP(selector)", "ff2b", [(0, 4, R, 0x2000), (4, 2, R, D0)],
        dev={0: far(0x2000, D0)}, exc=(GP, D0)),
    Row("jmp far to DPL 3 code from CPL 0: #GP(selector)", "ff2b", [(0, 4, R, 0x2000), (4, 2, R, C64U)],
        dev={0: far(0x2000, C64U)}, exc=(GP, C64U)),
    Row("jmp far with RPL 3 > CPL 0 to DPL 0 code: #GP(selector)", "ff2b",
        [(0, 4, R, 0x2000), (4, 2, R, C64 | 3)], dev={0: far(0x2000, C64 | 3)}, exc=(GP, C64)),
    Row("jmp far to a code segment not present: #NP(selector)", "ff2b", [(0, 4, R, 0x2000), (4, 2, R, CNP)],
        dev={0: far(0x2000, CNP)}, exc=(NP, CNP)),
    Row("jmp far to code with L and D set: #GP(selector)", "ff2b", [(0, 4, R, 0x2000), (4, 2, R, CLD)],
        dev={0: far(0x2000, CLD)}, exc=(GP, CLD)),
    Row("jmp far beyond the GDT limit: #GP(selector)", "ff2b", [(0, 4, R, 0x2000), (4, 2, R, 0x1000)],
        dev={0: far(0x2000, 0x1000)}, exc=(GP, 0x1000)),
    Row("jmp far into the LDT", "ff2b", [(0, 4, R, 0x2000), (4, 2, R, 0x14 | 3)], cpl=3,
        dev={0: far(0x2000, 0x17)}, rip=0x2000, ctl={"cs": 0x17}),
    Row("jmp far to conforming DPL 0 code from CPL 3: CPL and RPL stay 3", "ff2b",
        [(0, 4, R, 0x2000), (4, 2, R, CONF)], cpl=3, dev={0: far(0x2000, CONF)}, rip=0x2000,
        ctl={"cs": CONF | 3, "cs.dpl": 0}),
    Row("jmp far through a call gate: INST_EMUL", "ff2b", [(0, 4, R, 0x2000), (4, 2, R, GATE)],
        dev={0: far(0x2000, GATE)}, emul=InstEmulReason.NOT_EMULATED),
    Row("jmp far to a TSS (a task switch): INST_EMUL", "ff2b", [(0, 4, R, 0x2000), (4, 2, R, TSSA)],
        dev={0: far(0x2000, TSSA)}, emul=InstEmulReason.NOT_EMULATED),
    Row("jmp far to 16-bit code beyond its limit: #GP(0)", "ff2b", [(0, 4, R, 0x10000), (4, 2, R, C16)],
        dev={0: far(0x10000, C16)}, exc=(GP, 0)),
    Row("jmp far m16:64 to 64-bit code at a non-canonical offset: #GP(0)", "48ff2b",
        [(0, 8, R, 0x8000_0000_0000), (8, 2, R, C64)], dev={0: far(0x8000_0000_0000, C64, 8)}, exc=(GP, 0)),
    Row("jmp far with the GDT in a page not present: #PF, a supervisor read even at CPL 3", "ff2b",
        [(0, 4, R, 0x2000), (4, 2, R, C64U | 3)], cpl=3, dev={0: far(0x2000, C64U | 3)},
        control={"gdtr": (HIGH + 0x1000 - C64U, GDT_LIMIT)}, exc=(PF, 0, HIGH + 0x1000)),
    Row("call far [rbx+0x10] m16:32, operand and stack in MMIO: CS then EIP pushed", "ff5b10",
        [(0x10, 4, R, 0x2000), (0x14, 2, R, C32), (0xFC, 4, W, C64), (0xF8, 4, W, CODE + 3)],
        gprs={RSP: M + 0x100}, dev={0x10: far(0x2000, C32)}, fault_at=0x10, regs={RSP: M + 0xF8}, rip=0x2000,
        ctl={"cs": C32}),
    Row("call far m16:64 (REX.W): 8-byte pushes", "48ff5b10",
        [(0x10, 8, R, 0x3000), (0x18, 2, R, C64), (0xF8, 8, W, C64), (0xF0, 8, W, CODE + 4)],
        gprs={RSP: M + 0x100}, dev={0x10: far(0x3000, C64, 8)}, fault_at=0x10, regs={RSP: M + 0xF0},
        rip=0x3000),
    Row("call far m16:16 (66)", "66ff5b10",
        [(0x10, 2, R, 0x3000), (0x12, 2, R, C64), (0xFE, 2, W, C64), (0xFC, 2, W, CODE + 4)],
        gprs={RSP: M + 0x100}, dev={0x10: far(0x3000, C64, 2)}, fault_at=0x10, regs={RSP: M + 0xFC},
        rip=0x3000),
    Row("call far ptr16:32 (32-bit), stack in MMIO", "9a00300000" + "1800",
        [(0xFC, 4, W, C32), (0xF8, 4, W, CODE + 7)], mode="32", gprs={RSP: M + 0x100}, fault_at=0xFC,
        regs={RSP: M + 0xF8}, rip=0x3000),
    Row("call far ptr16:16 in real mode: CS base = selector * 16", "9a0004" + "0020",
        [(0xFE, 2, W, 0), (0xFC, 2, W, CODE + 5)], mode="real", gprs={RSP: 0x100}, fault_at=0xFE,
        regs={RSP: 0xFC}, rip=0x400, ctl={"cs": 0x2000, "cs.base": 0x20000, "cs.limit": 0xFFFF}),
    Row("jmp far [bx] in virtual-8086 mode", "ff2f", [(0, 2, R, 0x0400), (2, 2, R, 0x2000)], mode="vm86",
        gprs={RBX: 0},
        dev={0: far(0x0400, 0x2000, 2)}, rip=0x400,
        ctl={"cs": Segment(0x2000, 0x20000, 0xFFFF, 0xB, True, 3)}),
    Row("retf (64-bit, 32-bit operand size): EIP then CS", "cb", [(0x100, 4, R, 0x2000), (0x104, 4, R, C32)],
        gprs={RSP: M + 0x100}, fault_at=0x100, dev={0x100: dw(0x2000) + dw(C32)}, regs={RSP: M + 0x108},
        rip=0x2000, ctl={"cs": C32}),
    Row("retf (REX.W) 8-byte slots", "48cb", [(0x100, 8, R, 0x2000), (0x108, 8, R, C64)],
        gprs={RSP: M + 0x100}, fault_at=0x100, dev={0x100: q(0x2000) + q(C64)}, regs={RSP: M + 0x110},
        rip=0x2000),
    Row("retf 8", "ca0800", [(0x100, 4, R, 0x2000), (0x104, 4, R, C64)], gprs={RSP: M + 0x100},
        fault_at=0x100, dev={0x100: dw(0x2000) + dw(C64)}, regs={RSP: M + 0x110}, rip=0x2000),
    Row("retf (REX.W) to CPL 3: SS:RSP popped, DS/ES/FS/GS of DPL 0 nulled", "48cb",
        [(0x100, 8, R, 0x2000), (0x108, 8, R, C64U | 3), (0x110, 8, R, 0x7000), (0x118, 8, R, D3 | 3)],
        gprs={RSP: M + 0x100}, fault_at=0x100, dev={0x100: q(0x2000) + q(C64U | 3) + q(0x7000) + q(D3 | 3)},
        regs={RSP: 0x7000}, rip=0x2000,
        ctl={"cs": C64U | 3, "ss": D3 | 3, "cpl": 3, "ds": 0, "ds.unusable": True, "es": 0, "fs": 0,
             "gs": 0}, ram_after={ACC + D3: bytes([hi_byte(D3) | 1])}),
    Row("retf 0x10 to CPL 3: parameters released on both stacks", "ca1000",
        [(0x100, 4, R, 0x2000), (0x104, 4, R, C32U | 3), (0x118, 4, R, 0x7000), (0x11C, 4, R, D3 | 3)],
        mode="32", gprs={RSP: M + 0x100}, fault_at=0x100,
        dev={0x100: dw(0x2000) + dw(C32U | 3), 0x118: dw(0x7000) + dw(D3 | 3)},
        regs={RSP: 0x7010}, rip=0x2000,
        ctl={"cs": C32U | 3, "ss": D3 | 3, "cpl": 3, "ds": 0, "es": 0, "fs": 0, "gs": 0},
        ram_after={ACC + D3: bytes([hi_byte(D3) | 1])}),
    Row("retf to CPL 3 with a null SS: #GP(0)", "48cb",
        [(0x100, 8, R, 0x2000), (0x108, 8, R, C64U | 3), (0x110, 8, R, 0x7000), (0x118, 8, R, 3)],
        gprs={RSP: M + 0x100}, fault_at=0x100, dev={0x100: q(0x2000) + q(C64U | 3) + q(0x7000) + q(3)},
        exc=(GP, 0)),
    Row("retf to CPL 3 with SS of RPL 0: #GP(SS selector)", "48cb",
        [(0x100, 8, R, 0x2000), (0x108, 8, R, C64U | 3), (0x110, 8, R, 0x7000), (0x118, 8, R, D3)],
        gprs={RSP: M + 0x100}, fault_at=0x100, dev={0x100: q(0x2000) + q(C64U | 3) + q(0x7000) + q(D3)},
        exc=(GP, D3)),
    Row("retf from CPL 3 to CPL 0 code: #GP(selector)", "cb", [(0x100, 4, R, 0x2000), (0x104, 4, R, C64)],
        cpl=3, gprs={RSP: M + 0x100}, fault_at=0x100, dev={0x100: dw(0x2000) + dw(C64)}, exc=(GP, C64)),
    Row("retf in real mode", "cb", [(0x100, 2, R, 0x0400), (0x102, 2, R, 0x2000)], mode="real",
        gprs={RSP: 0x100}, fault_at=0x100, dev={0x100: w16(0x400) + w16(0x2000)}, regs={RSP: 0x104},
        rip=0x400,
        ctl={"cs": 0x2000, "cs.base": 0x20000}),
    Row("iretq to the same level: RIP, CS, RFLAGS, RSP, SS", "48cf",
        [(0x100, 8, R, 0x2000), (0x108, 8, R, C64), (0x110, 8, R, 0x3257FD7), (0x118, 8, R, 0x7000),
         (0x120, 8, R, D0)],
        gprs={RSP: M + 0x100}, fault_at=0x100,
        dev={0x100: q(0x2000) + q(C64) + q(0x3257FD7) + q(0x7000) + q(D0)},
        regs={RSP: 0x7000}, rip=0x2000, flags=0x257FD7),
    Row("iretq at CPL 3 to the same level: IF and IOPL kept, RF loaded (as on the host)", "48cf",
        [(0x100, 8, R, 0x2000), (0x108, 8, R, C64U | 3), (0x110, 8, R, (1 << 64) - 0x101),
         (0x118, 8, R, 0x7000), (0x120, 8, R, D3 | 3)],
        cpl=3, gprs={RSP: M + 0x100}, rflags=0x202, fault_at=0x100,
        dev={0x100: q(0x2000) + q(C64U | 3) + q(-0x101) + q(0x7000) + q(D3 | 3)},
        regs={RSP: 0x7000}, rip=0x2000, flags=0x254ED7, ram_after={ACC + D3: bytes([hi_byte(D3) | 1])}),
    Row("iretq from CPL 0 to CPL 3", "48cf",
        [(0x100, 8, R, 0x2000), (0x108, 8, R, C64U | 3), (0x110, 8, R, 0x202), (0x118, 8, R, 0x7000),
         (0x120, 8, R, D3 | 3)],
        gprs={RSP: M + 0x100}, fault_at=0x100,
        dev={0x100: q(0x2000) + q(C64U | 3) + q(0x202) + q(0x7000) + q(D3 | 3)},
        regs={RSP: 0x7000}, rip=0x2000, flags=0x202,
        ctl={"cs": C64U | 3, "ss": D3 | 3, "cpl": 3, "ds": 0, "es": 0, "fs": 0, "gs": 0},
        ram_after={ACC + D3: bytes([hi_byte(D3) | 1])}),
    Row("iretq to 64-bit code at CPL 0 with a null SS", "48cf",
        [(0x100, 8, R, 0x2000), (0x108, 8, R, C64), (0x110, 8, R, 2), (0x118, 8, R, 0x7000),
         (0x120, 8, R, 0)],
        gprs={RSP: M + 0x100}, fault_at=0x100, dev={0x100: q(0x2000) + q(C64) + q(2) + q(0x7000) + q(0)},
        regs={RSP: 0x7000}, rip=0x2000, ctl={"ss": 0, "ss.unusable": True}),
    Row("iretd in 64-bit mode: 4-byte slots, SS:ESP too (as on the host)", "cf",
        [(0x100, 4, R, 0x2000), (0x104, 4, R, C64), (0x108, 4, R, 0x246), (0x10C, 4, R, 0x7000),
         (0x110, 4, R, D0)],
        gprs={RSP: M + 0x100}, fault_at=0x100,
        dev={0x100: dw(0x2000) + dw(C64) + dw(0x246) + dw(0x7000) + dw(D0)},
        regs={RSP: 0x7000}, rip=0x2000, flags=0x246),
    Row("iretq to compatibility mode: RSP gets the low 32 bits of the image (as on the host)", "48cf",
        [(0x100, 8, R, 0x2000), (0x108, 8, R, C32), (0x110, 8, R, 2), (0x118, 8, R, 0x1_2345_7000),
         (0x120, 8, R, D0)],
        gprs={RSP: M + 0x100}, fault_at=0x100,
        dev={0x100: q(0x2000) + q(C32) + q(2) + q(0x1_2345_7000) + q(D0)},
        regs={RSP: 0x2345_7000}, rip=0x2000, ctl={"cs": C32}),
    Row("iretq with NT set: #GP(0)", "48cf", [], gprs={RSP: M + 0x100}, rflags=0x2 | NT, fault_at=0x100,
        exc=(GP, 0)),
    Row("iretq to a non-canonical RIP: #GP(0)", "48cf",
        [(0x100, 8, R, 0x8000_0000_0000), (0x108, 8, R, C64), (0x110, 8, R, 2), (0x118, 8, R, 0x7000),
         (0x120, 8, R, D0)],
        gprs={RSP: M + 0x100}, fault_at=0x100,
        dev={0x100: q(0x8000_0000_0000) + q(C64) + q(2) + q(0x7000) + q(D0)}, exc=(GP, 0)),
    Row("iretd (32-bit) to the same level: no SS:ESP", "cf",
        [(0x100, 4, R, 0x2000), (0x104, 4, R, C32), (0x108, 4, R, 0x247FD7)], mode="32",
        gprs={RSP: M + 0x100}, fault_at=0x100, dev={0x100: dw(0x2000) + dw(C32) + dw(0x247FD7)},
        regs={RSP: M + 0x10C}, rip=0x2000, flags=0x247FD7),
    Row("iretd with NT set outside IA-32e mode (a task return): INST_EMUL", "cf", [], mode="32",
        gprs={RSP: M + 0x100}, rflags=0x2 | NT, fault_at=0x100, emul=InstEmulReason.NOT_EMULATED),
    Row("iretd to virtual-8086 mode: INST_EMUL", "cf",
        [(0x100, 4, R, 0x2000), (0x104, 4, R, 0x2000), (0x108, 4, R, 0x20002)], mode="32",
        gprs={RSP: M + 0x100}, fault_at=0x100, dev={0x100: dw(0x2000) + dw(0x2000) + dw(0x20002)},
        emul=InstEmulReason.UNSUPPORTED_MODE),
    Row("iret in real mode", "cf", [(0x100, 2, R, 0x0400), (0x102, 2, R, 0x2000), (0x104, 2, R, 0xFFFF)],
        mode="real", gprs={RSP: 0x100}, fault_at=0x100, dev={0x100: w16(0x400) + w16(0x2000) + w16(0xFFFF)},
        regs={RSP: 0x106}, rip=0x400, flags=0x7FD7, ctl={"cs": 0x2000, "cs.base": 0x20000}),
    Row("iretd (66) in real mode: RF and AC loaded, VM/VIF/VIP not", "66cf",
        [(0x100, 4, R, 0x0400), (0x104, 4, R, 0x2000), (0x108, 4, R, 0x3F7FD7)],
        mode="real", gprs={RSP: 0x100}, fault_at=0x100, dev={0x100: dw(0x400) + dw(0x2000) + dw(0x3F7FD7)},
        regs={RSP: 0x10C}, rip=0x400, flags=0x257FD7, ctl={"cs": 0x2000, "cs.base": 0x20000}),
    Row("iret in virtual-8086 mode with IOPL 0: #GP(0)", "cf", [], mode="vm86", gprs={RSP: 0x100},
        fault_at=0x100, exc=(GP, 0)),
]

SEG_ROWS = [
    Row("mov ds, [rbx+0x40]", "8e5b40", [(0x40, 2, R, D0)], dev={0x40: w16(D0)}, fault_at=0x40,
        ctl={"ds": seg_of(D0)}),
    Row("mov ds, ax with the GDT in the device: descriptor read, accessed-bit write", "8ed8",
        [(0x1000 + D3, 8, R, GDT_ENTRIES[D3]), (0x1000 + D3 + 5, 1, W, hi_byte(D3) | 1)], gdt_in_device=True,
        gprs={RAX: D3 | 3}, fault_at=0x1000 + D3, ctl={"ds": D3 | 3, "ds.type": 3, "ds.dpl": 3}),
    Row("mov es, [rbx] (REX.W): a word", "488e03", [(0, 2, R, D3 | 3)], dev={0: w16(D3 | 3)},
        ctl={"es": D3 | 3}, ram_after={ACC + D3: bytes([hi_byte(D3) | 1])}),
    Row("mov ss, [rbx] at CPL 0", "8e13", [(0, 2, R, D0)], dev={0: w16(D0)}, ctl={"ss": D0}),
    Row("mov ss, [rbx] null in 64-bit mode at CPL 0", "8e13", [(0, 2, R, 0)], dev={0: w16(0)},
        ctl={"ss": 0, "ss.unusable": True, "ss.dpl": 0}),
    Row("mov ss, [rbx] null with RPL 1 at CPL 0: #GP(0)", "8e13", [(0, 2, R, 1)], dev={0: w16(1)},
        exc=(GP, 0)),
    Row("mov ss, [rbx] null at CPL 3: #GP(0) (as on the host)", "8e13", [(0, 2, R, 3)], cpl=3,
        dev={0: w16(3)}, exc=(GP, 0)),
    Row("mov ss, [ebx] null in 32-bit mode: #GP(0)", "8e13", [(0, 2, R, 0)], mode="32", dev={0: w16(0)},
        exc=(GP, 0)),
    Row("mov ss, [rbx] read-only data: #GP(selector)", "8e13", [(0, 2, R, RO)], dev={0: w16(RO)},
        exc=(GP, RO)),
    Row("mov ss, [rbx] DPL 3 data at CPL 0: #GP(selector)", "8e13", [(0, 2, R, D3 | 3)],
        dev={0: w16(D3 | 3)}, exc=(GP, D3)),
    Row("mov ss, [rbx] not present: #SS(selector)", "8e13", [(0, 2, R, NPD)], dev={0: w16(NPD)},
        exc=(SS_FAULT, NPD)),
    Row("mov ss, [rbx] at CPL 3 with DPL 3 data", "8e13", [(0, 2, R, D3 | 3)], cpl=3, dev={0: w16(D3 | 3)},
        ctl={"ss": D3 | 3}, ram_after={ACC + D3: bytes([hi_byte(D3) | 1])}),
    Row("mov ds, [rbx] not present: #NP(selector)", "8e1b", [(0, 2, R, NPD)], dev={0: w16(NPD)},
        exc=(NP, NPD)),
    Row("mov ds, [rbx] execute-only code: #GP(selector)", "8e1b", [(0, 2, R, XO)], dev={0: w16(XO)},
        exc=(GP, XO)),
    Row("mov ds, [rbx] readable conforming code from CPL 3", "8e1b", [(0, 2, R, CONF | 3)], cpl=3,
        dev={0: w16(CONF | 3)}, ctl={"ds": CONF | 3}),
    Row("mov ds, [rbx] DPL 0 data at CPL 3: #GP(selector) (as on the host)", "8e1b", [(0, 2, R, D0 | 3)],
        cpl=3, dev={0: w16(D0 | 3)}, exc=(GP, D0)),
    Row("mov ds, [rbx] RPL 3 to DPL 1 data at CPL 0: #GP(selector)", "8e1b", [(0, 2, R, D1 | 3)],
        dev={0: w16(D1 | 3)}, exc=(GP, D1)),
    Row("mov ds, [rbx] a system descriptor: #GP(selector)", "8e1b", [(0, 2, R, TSSA)], dev={0: w16(TSSA)},
        exc=(GP, TSSA)),
    Row("mov ds, [rbx] beyond the GDT: #GP(selector)", "8e1b", [(0, 2, R, 0x1003)], dev={0: w16(0x1003)},
        exc=(GP, 0x1000)),
    Row("mov ds, [rbx] null at CPL 3 (64-bit: allowed)", "8e1b", [(0, 2, R, 3)], cpl=3, dev={0: w16(3)},
        ctl={"ds": 3, "ds.unusable": True}),
    Row("mov fs, [rbx] null: the base is cleared (Intel)", "8e23", [(0, 2, R, 0)], dev={0: w16(0)},
        control={"segs": "fsbase"}, ctl={"fs": 0, "fs.base": 0, "fs.unusable": True}),
    Row("mov gs, [rbx]: base from the descriptor, accessed bit set", "8e2b", [(0, 2, R, DNA)],
        dev={0: w16(DNA)}, ctl={"gs": DNA, "gs.base": 0x1234_5000, "gs.type": 3},
        ram_after={ACC + DNA: bytes([hi_byte(DNA) | 1])}),
    Row("mov ds, [rbx] an LDT selector", "8e1b", [(0, 2, R, 0x0C)], dev={0: w16(0x0C)},
        ctl={"ds": 0x0C, "ds.base": 0x7000}, ram_after={LDT + 8 + 5: bytes([0x93])}),
    Row("mov ds, [rbx] beyond the LDT's limit: #GP(selector)", "8e1b", [(0, 2, R, 0x1C)], dev={0: w16(0x1C)},
        exc=(GP, 0x1C)),
    Row("mov ds, [rbx] an LDT selector with a null LDTR: #GP(selector)", "8e1b", [(0, 2, R, 0x0C)],
        dev={0: w16(0x0C)}, control={"ldtr": Segment(0, 0, 0, 2, False, 0, False, unusable=True)},
        exc=(GP, 0x0C)),
    Row("mov ds, [ebx] (32-bit) loads base and limit", "8e1b", [(0, 2, R, DEVD)], mode="32",
        dev={0: w16(DEVD)}, ctl={"ds": seg_of(DEVD)}),
    Row("mov ds, [bx] in real mode: base = selector * 16, limit kept", "8e1f", [(0, 2, R, 0x1234)],
        mode="real",
        gprs={RBX: 0}, dev={0: w16(0x1234)}, ctl={"ds": 0x1234, "ds.base": 0x12340, "ds.limit": 0xFFFF}),
    Row("mov es, [bx] in virtual-8086 mode", "8e07", [(0, 2, R, 0x1234)], mode="vm86", gprs={RBX: 0},
        dev={0: w16(0x1234)}, ctl={"es": Segment(0x1234, 0x12340, 0xFFFF, 3, True, 3)}),
    Row("mov ds, [rbx] with the GDT in a page not present: #PF(0)", "8e1b", [(0, 2, R, D3 | 3)],
        dev={0: w16(D3 | 3)}, control={"gdtr": (HIGH + 0x1000 - D3, GDT_LIMIT)}, exc=(PF, 0, HIGH + 0x1000)),
    Row("mov ds, [rbx] with the GDT read-only: the accessed-bit write faults (P|W)", "8e1b",
        [(0, 2, R, D3 | 3)], dev={0: w16(D3 | 3)},
        control={"gdtr": (HIGH + 0x3000 + GDT % 0x1000, GDT_LIMIT)},
        exc=(PF, 3, HIGH + 0x3000 + GDT % 0x1000 + D3 + 5)),
    Row("mov ds, [rbx] with the GDT mapped to the device through paging", "8e1b",
        [(0, 2, R, D3 | 3), (0x1000 + D3, 8, R, GDT_ENTRIES[D3]), (0x1000 + D3 + 5, 1, W, hi_byte(D3) | 1)],
        gdt_in_device=True, dev={0: w16(D3 | 3)}, control={"gdtr": (HIGH + 0x2000, GDT_LIMIT)},
        ctl={"ds": D3 | 3}),
    Row("mov [rbx], ds: a word", "8c1b", [(0, 2, W, D0)], ctl={}),
    Row("mov [rbx], fs with REX.W: still a word (as on the host)", "488c23", [(0, 2, W, D0)]),
    Row("mov [rbx], cs with 66", "668c0b", [(0, 2, W, C64)]),
    Row("mov cs, ax: #UD", "8ec8", [], exc=(UD, None)),
    Row("push fs (64-bit): 8 bytes, zero-extended (as on the host)", "0fa0", [(0xF8, 8, W, D0)],
        gprs={RSP: M + 0x100}, fault_at=0xF8, regs={RSP: M + 0xF8}),
    Row("push gs (66): a word", "660fa8", [(0xFE, 2, W, D0)], gprs={RSP: M + 0x100}, fault_at=0xFE,
        regs={RSP: M + 0xFE}),
    Row("push es (32-bit): the word of a dword slot (Intel; as on the host)", "06", [(0xFC, 2, W, D0)],
        mode="32", gprs={RSP: M + 0x100}, fault_at=0xFC, regs={RSP: M + 0xFC}),
    Row("push cs (32-bit)", "0e", [(0xFC, 2, W, C32)], mode="32", gprs={RSP: M + 0x100}, fault_at=0xFC,
        regs={RSP: M + 0xFC}),
    Row("push ss (16-bit)", "16", [(0xFE, 2, W, DEVD)], mode="16", gprs={RSP: 0x100}, fault_at=0xFE,
        regs={RSP: 0xFE}),
    Row("push ds (66, 32-bit mode): a word", "661e", [(0xFE, 2, W, D0)], mode="32", gprs={RSP: M + 0x100},
        fault_at=0xFE, regs={RSP: M + 0xFE}),
    Row("pop fs (64-bit): a word read, RSP + 8 (as on the host)", "0fa1", [(0x100, 2, R, D3 | 3)],
        gprs={RSP: M + 0x100}, fault_at=0x100, dev={0x100: q(0xFFFF_0000_0000_0000 | D3 | 3)},
        regs={RSP: M + 0x108}, ctl={"fs": D3 | 3}, ram_after={ACC + D3: bytes([hi_byte(D3) | 1])}),
    Row("pop gs not present: #NP, RSP kept", "0fa9", [(0x100, 2, R, NPD)], gprs={RSP: M + 0x100},
        fault_at=0x100, dev={0x100: q(NPD)}, exc=(NP, NPD)),
    Row("pop ds (32-bit)", "1f", [(0x100, 2, R, D0)], mode="32", gprs={RSP: M + 0x100}, fault_at=0x100,
        dev={0x100: q(D0)}, regs={RSP: M + 0x104}, ctl={"ds": D0}),
    Row("pop ss (32-bit)", "17", [(0x100, 2, R, D0)], mode="32", gprs={RSP: M + 0x100}, fault_at=0x100,
        dev={0x100: q(D0)}, regs={RSP: M + 0x104}, ctl={"ss": D0}),
    Row("pop es (real mode)", "07", [(0x100, 2, R, 0x1234)], mode="real", gprs={RSP: 0x100}, fault_at=0x100,
        dev={0x100: q(0x1234)}, regs={RSP: 0x102}, ctl={"es": 0x1234, "es.base": 0x12340}),
    Row("pop ds in 64-bit mode: #UD", "1f", [], gprs={RSP: M + 0x100}, fault_at=0x100, exc=(UD, None)),
    Row("lss rsp, [rbx] (REX.W): m16:64", "480fb223", [(0, 8, R, 0x7000), (8, 2, R, D0)],
        dev={0: far(0x7000, D0, 8)}, regs={RSP: 0x7000}, ctl={"ss": D0}),
    Row("lfs eax, [rbx]: m16:32", "0fb403", [(0, 4, R, 0x12345678), (4, 2, R, DNA)],
        dev={0: far(0x12345678, DNA)},
        regs={RAX: 0x12345678}, ctl={"fs": DNA, "fs.base": 0x1234_5000},
        ram_after={ACC + DNA: bytes([hi_byte(DNA) | 1])}),
    Row("lgs ax, [rbx] (66): m16:16", "660fb503", [(0, 2, R, 0x5678), (2, 2, R, D0)],
        dev={0: far(0x5678, D0, 2)}, regs={RAX: A & ~0xFFFF | 0x5678}, ctl={"gs": D0}),
    Row("lfs rax, [rbx+6]: a misaligned m16:64, offset then selector", "480fb44306",
        [(6, 8, R, 0x7000), (14, 2, R, D0)], dev={6: far(0x7000, D0, 8)},
        fault_at=6, regs={RAX: 0x7000}, ctl={"fs": D0}),
    Row("lds esi, [ebx] (32-bit)", "c533", [(0, 4, R, 0x1000), (4, 2, R, DEVD)], mode="32",
        dev={0: far(0x1000, DEVD)}, regs={RSI: 0x1000}, ctl={"ds": DEVD}),
    Row("les di, [bx] (real mode)", "c43f", [(0, 2, R, 0x100), (2, 2, R, 0x2000)], mode="real",
        gprs={RBX: 0},
        dev={0: far(0x100, 0x2000, 2)}, regs={RDI: 0x100}, ctl={"es": 0x2000, "es.base": 0x20000}),
    Row("lds with a selector not present: #NP, the register kept", "c533",
        [(0, 4, R, 0x1000), (4, 2, R, NPD)],
        mode="32", dev={0: far(0x1000, NPD)}, exc=(NP, NPD)),
    Row("lss with a null selector (32-bit): #GP(0)", "0fb223", [(0, 4, R, 0x1000), (4, 2, R, 0)], mode="32",
        dev={0: far(0x1000, 0)}, exc=(GP, 0)),
    Row("lds esi, [ebx] (compatibility mode)", "c533", [(0, 4, R, 0x1000), (4, 2, R, D3 | 3)], mode="compat",
        dev={0: far(0x1000, D3 | 3)}, regs={RSI: 0x1000}, ctl={"ds": D3 | 3},
        ram_after={ACC + D3: bytes([hi_byte(D3) | 1])}),
    Row("push es (compatibility mode): a word", "06", [(0xFC, 2, W, D0)], mode="compat",
        gprs={RSP: M + 0x100}, fault_at=0xFC, regs={RSP: M + 0xFC}),
]

SYS_ROWS = [
    Row("sgdt [rbx] (64-bit): the limit, then a 64-bit base", "0f0103",
        [(0, 2, W, GDT_LIMIT), (2, 8, W, GDT)]),
    Row("sidt [rbx+1]: misaligned, each field one request", "0f014b01", [(1, 2, W, 0xFFF), (3, 8, W, 0x8000)],
        fault_at=1),
    Row("sgdt [ebx] (32-bit): the limit, then a 32-bit base", "0f0103",
        [(0, 2, W, GDT_LIMIT), (2, 4, W, GDT)], mode="32"),
    Row("sgdt (66, 32-bit mode): the whole 32-bit base still", "660f0103",
        [(0, 2, W, 0x27), (2, 4, W, 0x12345678)], mode="32", control={"gdtr": (0x12345678, 0x27)}),
    Row("sgdt at CPL 3 without UMIP", "0f0103", [(0, 2, W, GDT_LIMIT), (2, 8, W, GDT)], cpl=3),
    Row("sgdt at CPL 3 with UMIP: #GP(0)", "0f0103", [], cpl=3, control={"cr4": 0x20 | 1 << 11},
        exc=(GP, 0)),
    Row("sgdt at CPL 0 with UMIP", "0f0103", [(0, 2, W, GDT_LIMIT), (2, 8, W, GDT)],
        control={"cr4": 0x20 | 1 << 11}),
    Row("lgdt [rbx] (64-bit)", "0f0113", [(0, 2, R, 0x27), (2, 8, R, 0xFFFF_8000_1234_5000)],
        dev={0: w16(0x27) + q(0xFFFF_8000_1234_5000)}, ctl={"gdtr": (0xFFFF_8000_1234_5000, 0x27)}),
    Row("lgdt [rbx] a non-canonical base: #GP(0)", "0f0113", [(0, 2, R, 0x27), (2, 8, R, 0x8000_1234_5000)],
        dev={0: w16(0x27) + q(0x8000_1234_5000)}, exc=(GP, 0)),
    Row("lgdt (66, 32-bit mode): a 24-bit base", "660f0113", [(0, 2, R, 0x27), (2, 4, R, 0x12345678)],
        mode="32", dev={0: w16(0x27) + dw(0x12345678)}, ctl={"gdtr": (0x345678, 0x27)}),
    Row("lidt [ebx] (32-bit)", "0f011b", [(0, 2, R, 0x27), (2, 4, R, 0x12345678)], mode="32",
        dev={0: w16(0x27) + dw(0x12345678)}, ctl={"idtr": (0x12345678, 0x27)}),
    Row("lidt [bx] in real mode (66: 32-bit base)", "660f011f", [(0, 2, R, 0x3FF), (2, 4, R, 0x12345678)],
        mode="real", gprs={RBX: 0}, dev={0: w16(0x3FF) + dw(0x12345678)}, ctl={"idtr": (0x12345678, 0x3FF)}),
    Row("lgdt at CPL 3: #GP(0) before the access", "0f0113", [], cpl=3, exc=(GP, 0)),
    Row("lidt in virtual-8086 mode: #GP(0)", "0f011f", [], mode="vm86", gprs={RBX: 0}, exc=(GP, 0)),
    Row("smsw [rbx]: a word of CR0", "0f0123", [(0, 2, W, 0x0011)]),
    Row("smsw [rbx] (REX.W): still a word", "480f0123", [(0, 2, W, 0x0011)]),
    Row("smsw at CPL 3 with UMIP: #GP(0)", "0f0123", [], cpl=3, control={"cr4": 0x20 | 1 << 11},
        exc=(GP, 0)),
    Row("lmsw [ebx]: MP, EM, TS", "0f0133", [(0, 2, R, 0xFFFE)], mode="32", dev={0: w16(0xFFFE)},
        ctl={"cr0": 0x1F}),
    Row("lmsw [ebx] cannot clear PE", "0f0133", [(0, 2, R, 0x0000)], mode="32", dev={0: w16(0)},
        ctl={"cr0": 0x11}),
    Row("lmsw [bx] in real mode sets PE", "0f0137", [(0, 2, R, 0x0001)], mode="real", gprs={RBX: 0},
        dev={0: w16(1)}, ctl={"cr0": 0x11}),
    Row("lmsw at CPL 3: #GP(0)", "0f0133", [], mode="32", cpl=3, exc=(GP, 0)),
    Row("sldt [rbx]", "0f0003", [(0, 2, W, LDTD)]),
    Row("str [rbx] (REX.W): a word", "480f000b", [(0, 2, W, TSSB)]),
    Row("str at CPL 3 without UMIP", "0f000b", [(0, 2, W, TSSB)], cpl=3),
    Row("sldt at CPL 3 with UMIP: #GP(0)", "0f0003", [], cpl=3, control={"cr4": 0x20 | 1 << 11},
        exc=(GP, 0)),
    Row("sldt in real mode: #UD", "0f0007", [], mode="real", gprs={RBX: 0}, exc=(UD, None)),
    Row("lldt [rbx] (64-bit: a 16-byte descriptor)", "0f0013", [(0, 2, R, LDTD)], dev={0: w16(LDTD)},
        control={"ldtr": Segment(0, 0, 0, 2, False, 0, False, unusable=True)}, ctl={"ldtr": seg_of(LDTD)}),
    Row("lldt ax with the GDT in the device: both halves read", "0f00d0",
        [(0x1000 + LDTD, 8, R, GDT_ENTRIES[LDTD]), (0x1000 + LDTD + 8, 8, R, 0)], gprs={RAX: LDTD},
        gdt_in_device=True, fault_at=0x1000 + LDTD, ctl={"ldtr": seg_of(LDTD)}),
    Row("lldt [ebx] (32-bit)", "0f0013", [(0, 2, R, LDTD)], mode="32", dev={0: w16(LDTD)},
        ctl={"ldtr": seg_of(LDTD)}),
    Row("lldt null: LDTR unusable", "0f0013", [(0, 2, R, 3)], dev={0: w16(3)},
        ctl={"ldtr": 3, "ldtr.unusable": True}),
    Row("lldt a TSS: #GP(selector)", "0f0013", [(0, 2, R, TSSA)], dev={0: w16(TSSA)}, exc=(GP, TSSA)),
    Row("lldt an LDT selector: #GP(selector)", "0f0013", [(0, 2, R, 0x0C)], dev={0: w16(0x0C)},
        exc=(GP, 0x0C)),
    Row("lldt at CPL 3: #GP(0)", "0f0013", [], cpl=3, exc=(GP, 0)),
    Row("lldt in virtual-8086 mode: #UD", "0f0017", [], mode="vm86", gprs={RBX: 0}, exc=(UD, None)),
    Row("ltr ax, GDT in the device: both halves read, the busy bit written", "0f00d8",
        [(0x1000 + TSSA, 8, R, GDT_ENTRIES[TSSA]), (0x1000 + TSSA + 8, 8, R, 0),
         (0x1000 + TSSA + 5, 1, W, hi_byte(TSSA) | 2)],
        gprs={RAX: TSSA}, gdt_in_device=True, fault_at=0x1000 + TSSA, ctl={"tr": TSSA, "tr.type": 0xB}),
    Row("ltr [rbx]: busy bit set in the RAM GDT", "0f001b", [(0, 2, R, TSSA)], dev={0: w16(TSSA)},
        ctl={"tr": TSSA, "tr.base": TSS, "tr.limit": 0x67, "tr.type": 0xB},
        ram_after={ACC + TSSA: bytes([hi_byte(TSSA) | 2])}),
    Row("ltr a busy TSS: #GP(selector)", "0f001b", [(0, 2, R, TSSB)], dev={0: w16(TSSB)}, exc=(GP, TSSB)),
    Row("ltr null: #GP(0)", "0f001b", [(0, 2, R, 0)], dev={0: w16(0)}, exc=(GP, 0)),
    Row("ltr a 16-bit TSS in IA-32e mode: #GP(selector)", "0f001b", [(0, 2, R, TSS16)], dev={0: w16(TSS16)},
        exc=(GP, TSS16)),
    Row("ltr a 16-bit TSS (32-bit)", "0f001b", [(0, 2, R, TSS16)], mode="32", dev={0: w16(TSS16)},
        ctl={"tr": TSS16, "tr.type": 3}, ram_after={ACC + TSS16: bytes([hi_byte(TSS16) | 2])}),
    Row("ltr through a read-only GDT mapping: the busy write faults (P|W)", "0f001b", [(0, 2, R, TSSA)],
        dev={0: w16(TSSA)}, control={"gdtr": (HIGH + 0x3000 + GDT % 0x1000, GDT_LIMIT)},
        exc=(PF, 3, HIGH + 0x3000 + GDT % 0x1000 + TSSA + 5)),
    Row("verr [rbx] DPL 3 data at CPL 0: ZF=1", "0f0023", [(0, 2, R, D3 | 3)], dev={0: w16(D3 | 3)},
        flags=0x2 | ZF),
    Row("verw [rbx] read-only data: ZF=0", "0f002b", [(0, 2, R, RO)], rflags=0x2 | ZF, dev={0: w16(RO)},
        flags=0x2),
    Row("verw [rbx] writable data: ZF=1", "0f002b", [(0, 2, R, D0)], dev={0: w16(D0)}, flags=0x2 | ZF),
    Row("verr [rbx] execute-only code: ZF=0", "0f0023", [(0, 2, R, XO)], rflags=0x2 | ZF | CF,
        dev={0: w16(XO)}, flags=0x2 | CF),
    Row("verr [rbx] a data segment not present: ZF=1 (presence is not checked)", "0f0023", [(0, 2, R, NPD)],
        dev={0: w16(NPD)}, flags=0x2 | ZF),
    Row("verr [rbx] DPL 0 data at CPL 3: ZF=0 (as on the host)", "0f0023", [(0, 2, R, D0 | 3)], cpl=3,
        rflags=0x2 | ZF, dev={0: w16(D0 | 3)}, flags=0x2),
    Row("verr [rbx] conforming code at CPL 3: ZF=1", "0f0023", [(0, 2, R, CONF | 3)], cpl=3,
        dev={0: w16(CONF | 3)}, flags=0x2 | ZF),
    Row("verr [rbx] a TSS: ZF=0", "0f0023", [(0, 2, R, TSSA)], rflags=0x2 | ZF, dev={0: w16(TSSA)},
        flags=0x2),
    Row("verr [rbx] null: ZF=0, no descriptor read", "0f0023", [(0, 2, R, 0)], rflags=0x2 | ZF,
        dev={0: w16(0)}, flags=0x2),
    Row("verw [rbx] beyond the GDT: ZF=0, no fault", "0f002b", [(0, 2, R, 0x1000)], rflags=0x2 | ZF,
        dev={0: w16(0x1000)}, flags=0x2),
    Row("verr ax with the GDT in the device", "0f00e0", [(0x1000 + D0, 8, R, GDT_ENTRIES[D0])],
        gprs={RAX: D0}, gdt_in_device=True, fault_at=0x1000 + D0, flags=0x2 | ZF),
    Row("verr in real mode: #UD", "0f0027", [], mode="real", gprs={RBX: 0}, exc=(UD, None)),
]

# fmt: on

ROWS = STACK_ROWS + NEAR_ROWS + FAR_ROWS + SEG_ROWS + SYS_ROWS


# Control fields a row may change, and how to read them.
_SEGS = {"es": ES, "cs": CS, "ss": SS, "ds": DS, "fs": FS, "gs": GS}


def _field(ctl: Control, name: str) -> Any:
    if name in _SEGS:
        return ctl.segs[_SEGS[name]]
    return getattr(ctl, name)


_FIELDS = (*_SEGS, "tr", "ldtr", "gdtr", "idtr", "cr0", "cr3", "cr4", "efer", "cpl")


def _setup(row: Row) -> Setup:
    control = dict(row.control)
    has_special = "segs" in control
    special = control.pop("segs", None)
    setup = Setup(
        bytes.fromhex(row.code), row.mode, row.cpl, {RAX: A, **row.gprs}, row.rflags, row.dev, row.ram,
        row.fault_at, row.gdt_in_device, control,
    )  # fmt: skip
    return _special(setup, special) if has_special else setup


def _special(setup: Setup, what: Any) -> Setup:
    """Rows that need a segment set-up of their own."""
    from ctl_harness import control_for

    ctl = control_for(setup.mode, setup.cpl)
    if what is None:  # an expand-down SS (limit 0xFFF: offsets 0x1000 up are valid)
        ss = seg_of(EXPD)
        ss.type |= 1
        ctl.segs[SS] = ss
        ctl.segs[DS] = ctl.segs[ES] = seg_of(D0)
        setup.control = {"segs": ctl.segs}
    elif what == "cpl1":
        ctl.segs[CS] = seg_of(C32)
        ctl.segs[CS].selector |= 1
        setup.control = {"segs": ctl.segs, "cpl": 1}
    elif what == "fsbase":
        ctl.segs[FS] = seg_of(D0)
        ctl.segs[FS].base = 0x1234_0000
        setup.control = {"segs": ctl.segs}
    return setup


def check(row: Row) -> None:
    code = bytes.fromhex(row.code)
    result = run(_setup(row))
    backend = result.backend
    regs = backend.regs
    before_gprs = {RAX: A, **row.gprs}
    assert result.trace == row.trace
    last = result.exits[-1]
    if row.emul is not None:
        assert isinstance(last, InstEmulExit) and last.reason == row.emul, last
        assert regs.rip == CODE
        return
    assert isinstance(last, HltExit), last
    if row.exc is not None:
        vector, ec, *cr2 = row.exc
        assert backend.injected == [(vector, ec, cr2[0] if cr2 else None)]
        assert regs.rip == CODE
        for field_name in _FIELDS:
            assert _field(backend.control, field_name) == _field(result.before, field_name), field_name
        return
    assert backend.injected == []
    for n in range(16):
        want = row.regs.get(n, before_gprs.get(n, regs.gprs[n]))
        if n not in row.regs and n not in before_gprs:
            continue
        assert hex(regs.gprs[n]) == hex(want & ((1 << 64) - 1)), f"gpr {n}"
    assert hex(regs.rip) == hex(row.rip if row.rip is not None else CODE + len(code))
    want_flags = row.flags if row.flags is not None else row.rflags | (VM if row.mode == "vm86" else 0)
    assert hex(regs.rflags) == hex(want_flags)
    touched = {k.split(".")[0] for k in row.ctl}
    after = backend.control
    for field_name in _FIELDS:
        if field_name not in touched:
            assert _field(after, field_name) == _field(result.before, field_name), field_name
    for key, want in row.ctl.items():
        name, _, attr = key.partition(".")
        got = _field(after, name)
        if attr:
            assert getattr(got, attr) == want, key
        elif isinstance(got, Segment) and isinstance(want, int):
            assert got.selector == want, key
        elif isinstance(got, Segment) and isinstance(want, Segment):
            # The load sets the accessed bit of a code/data descriptor.
            expect = replace(want, type=want.type | 1) if want.s else want
            assert got == expect, key
        else:
            assert got == want, key
    for gpa, data in row.ram_after.items():
        assert result.vm.memory.read(gpa, len(data)) == data, hex(gpa)


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_row(row: Row) -> None:
    check(row)


def test_names_are_unique() -> None:
    names = [r.name for r in ROWS]
    assert len(names) == len(set(names))


def test_every_mode_is_exercised() -> None:
    assert {r.mode for r in ROWS} == set(MODE_BITS)


# Code size of each mode: the meta-test in tests/test_vcpu_forms.py decodes every row with it.
MODE_BITS = {"64": 64, "compat": 32, "32": 32, "16": 16, "real": 16, "vm86": 16}
