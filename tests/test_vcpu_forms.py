"""Every emulated form, driven through the Vcpu on the scripted backend.

Each row gives the instruction, the registers before, the exact device-visible request sequence
(offset from the device base, size, write?, data), the registers that change, and the status flags
afterwards (computed by hand from the SDM definitions). Registers not named must not change; RIP must
advance by exactly the instruction length; the run must end with HLT (the script running out).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from harness import DATA, MMIO, Guest

from vmmio.abi import HltExit, InoutExit, MmioExit
from vmmio.x86.regs import AF, CF, DF, OF, PF, SF, STATUS_FLAGS, ZF

RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI = range(8)  # vmmio.x86.regs.Gpr numbering
R9, R10, R12 = 9, 10, 12
W, R = True, False

# Device contents at MMIO (little-endian qwords at offsets 0, 8, 0x10).
DEVICE = {
    0: 0x123456789ABCDEF0,
    8: 0x0102030405060708,
    0x10: 0xFFFFFFFF80000000,
    0x100: 0x1111222233334444,
}
BASE_GPRS = {RAX: 0x1122334455667788, RCX: 0x8877665544332211, RBX: MMIO}


@dataclass
class Case:
    name: str
    code: str
    trace: list[tuple[int, int, bool, int]]
    regs: dict[int, int] = field(default_factory=dict)  # expected changes
    flags: int | None = None  # expected status flags (None: unchanged)
    gprs: dict[int, int] = field(default_factory=dict)  # set before, on top of BASE_GPRS
    rflags: int = 0  # status/DF flags before
    ram: dict[int, int] = field(default_factory=dict)  # qwords written to RAM before
    ram_after: dict[int, tuple[int, int]] = field(default_factory=dict)  # gpa -> (size, value)
    fault: int = MMIO
    ports: list[tuple[int, int, bool, int]] = field(default_factory=list)
    io: tuple[int, int, bool] | None = None
    fs_base: int = 0


def ids(cases: list[Case]) -> list[str]:
    return [c.name for c in cases]


MOVES = [
    Case("mov [rbx],al", "8803", [(0, 1, W, 0x88)]),
    Case("mov [rbx],ah", "8823", [(0, 1, W, 0x77)]),
    Case("mov [rbx],sil", "408833", [(0, 1, W, 0xCD)], gprs={RSI: 0xABCD}),
    Case("mov [rbx],ax", "668903", [(0, 2, W, 0x7788)]),
    Case("mov [rbx],eax", "8903", [(0, 4, W, 0x55667788)]),
    Case("mov [rbx],rax", "488903", [(0, 8, W, 0x1122334455667788)]),
    Case(
        "mov [rbx+r12*4+0x10],r9d",
        "46894ca310",
        [(0x18, 4, W, 0xCAFEF00D)],
        gprs={R12: 2, R9: 0xDEADBEEFCAFEF00D},
    ),
    Case("mov al,[rbx]", "8a03", [(0, 1, R, 0xF0)], {RAX: 0x11223344556677F0}),
    Case("mov ah,[rbx]", "8a23", [(0, 1, R, 0xF0)], {RAX: 0x112233445566F088}),
    Case("mov ax,[rbx]", "668b03", [(0, 2, R, 0xDEF0)], {RAX: 0x112233445566DEF0}),
    Case("mov eax,[rbx] zero-extends", "8b03", [(0, 4, R, 0x9ABCDEF0)], {RAX: 0x9ABCDEF0}),
    Case("mov rax,[rbx]", "488b03", [(0, 8, R, 0x123456789ABCDEF0)], {RAX: 0x123456789ABCDEF0}),
    Case("mov r10b,[rbx]", "448a13", [(0, 1, R, 0xF0)], {R10: 0xFFFFFFFFFFFFFFF0}, gprs={R10: (1 << 64) - 1}),
    Case("mov byte [rbx],0x7f", "c6037f", [(0, 1, W, 0x7F)]),
    Case("mov word [rbx],0x1234", "66c7033412", [(0, 2, W, 0x1234)]),
    Case("mov dword [rbx],0x80000000", "c70300000080", [(0, 4, W, 0x80000000)]),
    Case("mov qword [rbx],-2 sign-extends", "48c703feffffff", [(0, 8, W, 0xFFFFFFFFFFFFFFFE)]),
    Case("movabs al,[moffs64]", "a00800004000000000", [(8, 1, R, 0x08)], {RAX: 0x1122334455667708}),
    Case("movabs eax,[moffs64]", "a10800004000000000", [(8, 4, R, 0x05060708)], {RAX: 0x05060708}),
    Case(
        "movabs rax,[moffs64]",
        "48a10800004000000000",
        [(8, 8, R, 0x0102030405060708)],
        {RAX: 0x0102030405060708},
    ),
    Case("movabs ax,[moffs64]", "66a10800004000000000", [(8, 2, R, 0x0708)], {RAX: 0x1122334455660708}),
    Case("movabs [moffs64],al", "a20800004000000000", [(8, 1, W, 0x88)]),
    Case("movabs [moffs64],rax", "48a30800004000000000", [(8, 8, W, 0x1122334455667788)]),
    Case("mov eax,[moffs32] (67)", "67a110000040", [(0x10, 4, R, 0x80000000)], {RAX: 0x80000000}),
    Case("movzx eax,byte [rbx]", "0fb603", [(0, 1, R, 0xF0)], {RAX: 0xF0}),
    Case("movzx ecx,word [rbx]", "0fb70b", [(0, 2, R, 0xDEF0)], {RCX: 0xDEF0}),
    Case("movzx rax,byte [rbx]", "480fb603", [(0, 1, R, 0xF0)], {RAX: 0xF0}),
    Case("movzx ax,byte [rbx]", "660fb603", [(0, 1, R, 0xF0)], {RAX: 0x11223344556600F0}),
    Case("movsx eax,byte [rbx]", "0fbe03", [(0, 1, R, 0xF0)], {RAX: 0xFFFFFFF0}),
    Case("movsx rax,word [rbx]", "480fbf03", [(0, 2, R, 0xDEF0)], {RAX: 0xFFFFFFFFFFFFDEF0}),
    Case("movsx ax,byte [rbx]", "660fbe03", [(0, 1, R, 0xF0)], {RAX: 0x112233445566FFF0}),
    Case("movsxd rax,[rbx]", "486303", [(0, 4, R, 0x9ABCDEF0)], {RAX: 0xFFFFFFFF9ABCDEF0}),
    Case("movsxd eax,[rbx] (no REX.W)", "6303", [(0, 4, R, 0x9ABCDEF0)], {RAX: 0x9ABCDEF0}),
    Case("mov eax,[rip+disp32]", "8b0500f0ff3f", [(6, 4, R, 0x07081234)], {RAX: 0x07081234}),
    Case(
        "xchg [rbx],ecx: read then write",
        "870b",
        [(0, 4, R, 0x9ABCDEF0), (0, 4, W, 0x44332211)],
        {RCX: 0x9ABCDEF0},
    ),
    Case("mov eax,[rbx+rcx*8-8]", "8b44cbf8", [(0x10, 4, R, 0x80000000)], {RAX: 0x80000000}, gprs={RCX: 3}),
    Case(
        "mov eax,[ebx] (67 truncates the base)",
        "678b03",
        [(0, 4, R, 0x9ABCDEF0)],
        {RAX: 0x9ABCDEF0},
        gprs={RBX: 0xFFFFFFFF00000000 | MMIO},
    ),
]

ALU = [
    Case("add [rbx],al", "0003", [(0, 1, R, 0xF0), (0, 1, W, 0x78)], flags=CF | OF | PF),
    Case("add [rbx],eax", "0103", [(0, 4, R, 0x9ABCDEF0), (0, 4, W, 0xF0235678)], flags=SF | PF),
    Case("or [rbx],ax", "660903", [(0, 2, R, 0xDEF0), (0, 2, W, 0xFFF8)], flags=SF),
    Case(
        "adc [rbx],rax with CF",
        "481103",
        [(0, 8, R, 0x123456789ABCDEF0), (0, 8, W, 0x235689BCF0235679)],
        flags=0,
        rflags=CF,
    ),
    Case("sbb al,[rbx]", "1a03", [(0, 1, R, 0xF0)], {RAX: 0x1122334455667798}, flags=CF | SF),
    Case("and eax,[rbx]", "2303", [(0, 4, R, 0x9ABCDEF0)], {RAX: 0x10245680}, flags=0),
    Case(
        "sub rax,[rbx]",
        "482b03",
        [(0, 8, R, 0x123456789ABCDEF0)],
        {RAX: 0xFEEDDCCBBAA99898},
        flags=CF | SF,
    ),
    Case("xor [rbx],cx", "66310b", [(0, 2, R, 0xDEF0), (0, 2, W, 0xFCE1)], flags=SF | PF),
    Case("cmp [rbx],eax: read only", "3903", [(0, 4, R, 0x9ABCDEF0)], flags=OF | AF),
    Case("cmp eax,[rbx]", "3b03", [(0, 4, R, 0x9ABCDEF0)], flags=CF | OF | SF),
    Case("add byte [rbx],0x80", "800380", [(0, 1, R, 0xF0), (0, 1, W, 0x70)], flags=CF | OF),
    Case(
        "sub dword [rbx],imm32",
        "812b78563412",
        [(0, 4, R, 0x9ABCDEF0), (0, 4, W, 0x88888878)],
        flags=SF | AF | PF,
    ),
    Case(
        "and qword [rbx],-16 (imm8 sign-extended)",
        "488323f0",
        [(0, 8, R, 0x123456789ABCDEF0), (0, 8, W, 0x123456789ABCDEF0)],
        flags=PF,
    ),
    Case("or word [rbx],1", "66830b01", [(0, 2, R, 0xDEF0), (0, 2, W, 0xDEF1)], flags=SF),
    Case("xor dword [rbx],-1", "8333ff", [(0, 4, R, 0x9ABCDEF0), (0, 4, W, 0x6543210F)], flags=PF),
    Case("cmp byte [rbx],5", "803b05", [(0, 1, R, 0xF0)], flags=SF | AF | PF),
    Case(
        "adc dword [rbx],1 with CF",
        "831301",
        [(0, 4, R, 0x9ABCDEF0), (0, 4, W, 0x9ABCDEF2)],
        flags=SF,
        rflags=CF,
    ),
    Case(
        "sbb qword [rbx],0 with CF",
        "48831b00",
        [(0, 8, R, 0x123456789ABCDEF0), (0, 8, W, 0x123456789ABCDEEF)],
        flags=AF,
        rflags=CF,
    ),
    Case("lock add [rbx],eax", "f00103", [(0, 4, R, 0x9ABCDEF0), (0, 4, W, 0xF0235678)], flags=SF | PF),
    Case("test [rbx],al", "8403", [(0, 1, R, 0xF0)], flags=SF),
    Case("test [rbx],rax", "488503", [(0, 8, R, 0x123456789ABCDEF0)], flags=0, rflags=CF | OF | ZF),
    Case("test byte [rbx],0x80", "f60380", [(0, 1, R, 0xF0)], flags=SF),
    Case("test dword [rbx],0x100", "f70300010000", [(0, 4, R, 0x9ABCDEF0)], flags=ZF | PF),
    Case("test word [rbx],0x8000", "66f7030080", [(0, 2, R, 0xDEF0)], flags=SF | PF),
    Case(
        "inc dword [rbx] keeps CF",
        "ff03",
        [(0, 4, R, 0x9ABCDEF0), (0, 4, W, 0x9ABCDEF1)],
        flags=CF | SF,
        rflags=CF,
    ),
    Case("dec byte [rbx]", "fe0b", [(0, 1, R, 0xF0), (0, 1, W, 0xEF)], flags=SF | AF),
    Case("neg word [rbx]", "66f71b", [(0, 2, R, 0xDEF0), (0, 2, W, 0x2110)], flags=CF),
    Case(
        "not qword [rbx] keeps flags",
        "48f713",
        [(0, 8, R, 0x123456789ABCDEF0), (0, 8, W, 0xEDCBA9876543210F)],
        rflags=ZF | CF,
    ),
]

BITS = [
    Case("bt dword [rbx],3", "0fba2303", [(0, 4, R, 0x9ABCDEF0)], flags=0, rflags=CF),
    Case("bt word [rbx],20 (imm mod 16)", "660fba2314", [(0, 2, R, 0xDEF0)], flags=CF),
    Case("bt qword [rbx],60", "480fba233c", [(0, 8, R, 0x123456789ABCDEF0)], flags=CF | ZF, rflags=ZF),
    Case("bt [rbx],eax=35 addresses +4", "0fa303", [(4, 4, R, 0x12345678)], flags=CF, gprs={RAX: 35}),
    Case(
        "bt [rbx+8],rax=-4 addresses -8",
        "480fa303",
        [(0, 8, R, 0x123456789ABCDEF0)],
        flags=CF,
        gprs={RAX: (1 << 64) - 4, RBX: MMIO + 8},
    ),
    Case("bts dword [rbx],3", "0fba2b03", [(0, 4, R, 0x9ABCDEF0), (0, 4, W, 0x9ABCDEF8)], flags=0),
    Case(
        "btr [rbx],ecx=4", "0fb30b", [(0, 4, R, 0x9ABCDEF0), (0, 4, W, 0x9ABCDEE0)], flags=CF, gprs={RCX: 4}
    ),
    Case("clflush [rbx]: no request", "0fae3b", []),
    Case("clflushopt [rbx]: no request", "660fae3b", []),
    Case("clwb [rbx]: no request", "660fae33", []),
]

STACK_TOP = DATA + 0x100
STACK = [
    Case(
        "push qword [rbx]",
        "ff33",
        [(0, 8, R, 0x123456789ABCDEF0)],
        {RSP: STACK_TOP - 8},
        gprs={RSP: STACK_TOP},
        ram_after={STACK_TOP - 8: (8, 0x123456789ABCDEF0)},
    ),
    Case(
        "push word [rbx]",
        "66ff33",
        [(0, 2, R, 0xDEF0)],
        {RSP: STACK_TOP - 2},
        gprs={RSP: STACK_TOP},
        ram_after={STACK_TOP - 2: (2, 0xDEF0)},
    ),
    Case(
        "pop qword [rbx]",
        "8f03",
        [(0, 8, W, 0xCAFEBABEDEADBEEF)],
        {RSP: STACK_TOP + 8},
        gprs={RSP: STACK_TOP},
        ram={STACK_TOP: 0xCAFEBABEDEADBEEF},
    ),
    Case(
        "pop word [rbx]",
        "668f03",
        [(0, 2, W, 0xBEEF)],
        {RSP: STACK_TOP + 2},
        gprs={RSP: STACK_TOP},
        ram={STACK_TOP: 0xCAFEBABEDEADBEEF},
    ),
    Case(
        "pop qword [rsp+8] uses the incremented rsp, stack in MMIO",
        "8f442408",
        [(0x100, 8, R, 0x1111222233334444), (0x110, 8, W, 0x1111222233334444)],
        {RSP: MMIO + 0x108},
        gprs={RSP: MMIO + 0x100},
        fault=MMIO + 0x100,
    ),
]

STRINGS = [
    Case(
        "movsb MMIO->RAM",
        "a4",
        [(0, 1, R, 0xF0)],
        {RSI: MMIO + 1, RDI: DATA + 1},
        gprs={RSI: MMIO, RDI: DATA},
        ram_after={DATA: (1, 0xF0)},
    ),
    Case(
        "movsw MMIO->RAM with DF",
        "66a5",
        [(8, 2, R, 0x0708)],
        {RSI: MMIO + 6, RDI: DATA - 2},
        gprs={RSI: MMIO + 8, RDI: DATA},
        rflags=DF,
        ram_after={DATA: (2, 0x0708)},
    ),
    Case(
        "movsd RAM->MMIO",
        "a5",
        [(0, 4, W, 0x11223344)],
        {RSI: DATA + 4, RDI: MMIO + 4},
        gprs={RSI: DATA, RDI: MMIO},
        ram={DATA: 0x11223344},
    ),
    Case(
        "movsq MMIO->MMIO: source then destination",
        "48a5",
        [(0, 8, R, 0x123456789ABCDEF0), (0x100, 8, W, 0x123456789ABCDEF0)],
        {RSI: MMIO + 8, RDI: MMIO + 0x108},
        gprs={RSI: MMIO, RDI: MMIO + 0x100},
    ),
    Case(
        "movs fs:[rsi] honours the override",
        "64a4",
        [(0, 1, R, 0xF0)],
        {RSI: 0x1001, RDI: DATA + 1},
        gprs={RSI: 0x1000, RDI: DATA},
        fs_base=MMIO - 0x1000,
    ),
    Case("rep movsb RCX=0: nothing", "f3a4", [], gprs={RSI: MMIO, RDI: DATA, RCX: 0}),
    Case(
        "rep movsb RCX=1",
        "f3a4",
        [(0, 1, R, 0xF0)],
        {RSI: MMIO + 1, RDI: DATA + 1, RCX: 0},
        gprs={RSI: MMIO, RDI: DATA, RCX: 1},
        ram_after={DATA: (1, 0xF0)},
    ),
    Case(
        "rep movsq RCX=3 MMIO->RAM",
        "f348a5",
        [(0, 8, R, 0x123456789ABCDEF0), (8, 8, R, 0x0102030405060708), (0x10, 8, R, 0xFFFFFFFF80000000)],
        {RSI: MMIO + 24, RDI: DATA + 24, RCX: 0},
        gprs={RSI: MMIO, RDI: DATA, RCX: 3},
        ram_after={
            DATA: (8, 0x123456789ABCDEF0),
            DATA + 8: (8, 0x0102030405060708),
            DATA + 16: (8, 0xFFFFFFFF80000000),
        },
    ),
    Case(
        "rep movsq RCX=3 with DF: descending",
        "f348a5",
        [(0x10, 8, R, 0xFFFFFFFF80000000), (8, 8, R, 0x0102030405060708), (0, 8, R, 0x123456789ABCDEF0)],
        {RSI: MMIO - 8, RDI: DATA - 8, RCX: 0},
        gprs={RSI: MMIO + 0x10, RDI: DATA + 0x10, RCX: 3},
        rflags=DF,
        fault=MMIO + 0x10,
        ram_after={DATA: (8, 0x123456789ABCDEF0), DATA + 16: (8, 0xFFFFFFFF80000000)},
    ),
    Case(
        "addr32 rep movsb: ECX/ESI/EDI, upper halves cleared",
        "67f3a4",
        [(0, 1, R, 0xF0), (1, 1, R, 0xDE)],
        {RSI: MMIO + 2, RDI: DATA + 2, RCX: 0},
        gprs={RSI: 0xFFFFFFFF00000000 | MMIO, RDI: 0xFFFFFFFF00000000 | DATA, RCX: 0xFFFFFFFF00000002},
    ),
    Case(
        "addr32 rep movsb ECX=0: RCX, RSI, RDI upper halves cleared (Intel)",
        "67f3a4",
        [],
        {RSI: MMIO, RDI: DATA, RCX: 0},
        gprs={RSI: 0xFFFF0000_00000000 | MMIO, RDI: 0xFFFF0000_00000000 | DATA, RCX: 0xFFFF0000_00000000},
    ),
    Case(
        "addr32 rep stosb ECX=0: RCX, RDI upper halves cleared, RSI kept (Intel)",
        "67f3aa",
        [],
        {RDI: MMIO, RCX: 0},
        gprs={RSI: 0xFFFF0000_00000000, RDI: 0xFFFF0000_00000000 | MMIO, RCX: 0xFFFF0000_00000000},
    ),
    Case(
        "addr32 rep lodsb ECX=0: only RCX upper half cleared (Intel)",
        "67f3ac",
        [],
        {RCX: 0},
        gprs={RSI: 0xFFFF0000_00000000 | MMIO, RCX: 0xFFFF0000_00000000},
    ),
    Case("stosb", "aa", [(0, 1, W, 0x88)], {RDI: MMIO + 1}, gprs={RDI: MMIO}),
    Case(
        "rep stosd RCX=4",
        "f3ab",
        [(0, 4, W, 0x55667788), (4, 4, W, 0x55667788), (8, 4, W, 0x55667788), (12, 4, W, 0x55667788)],
        {RDI: MMIO + 16, RCX: 0},
        gprs={RDI: MMIO, RCX: 4},
    ),
    Case(
        "rep stosq RCX=2 with DF",
        "f348ab",
        [(8, 8, W, 0x1122334455667788), (0, 8, W, 0x1122334455667788)],
        {RDI: MMIO - 8, RCX: 0},
        gprs={RDI: MMIO + 8, RCX: 2},
        rflags=DF,
        fault=MMIO + 8,
    ),
    Case(
        "lodsd zero-extends",
        "ad",
        [(0, 4, R, 0x9ABCDEF0)],
        {RAX: 0x9ABCDEF0, RSI: MMIO + 4},
        gprs={RSI: MMIO},
    ),
    Case(
        "rep cmpsb stops when bytes differ",
        "f3a6",
        [(0, 1, R, 0xF0), (1, 1, R, 0xDE), (2, 1, R, 0xBC)],
        {RSI: MMIO + 3, RDI: DATA + 3, RCX: 7},
        flags=SF,
        gprs={RSI: MMIO, RDI: DATA, RCX: 10},
        ram={DATA: 0xDEF0},
    ),
    Case(
        "repne scasb stops on a match",
        "f2ae",
        [(0, 1, R, 0xF0), (1, 1, R, 0xDE), (2, 1, R, 0xBC), (3, 1, R, 0x9A)],
        {RDI: MMIO + 4, RCX: 6},
        flags=ZF | PF,
        gprs={RAX: 0x9A, RDI: MMIO, RCX: 10},
    ),
]

PORTS = [
    Case(
        "in al,0x60", "e460", [], {RAX: 0x11223344556677A5}, io=(0x60, 1, True), ports=[(0x60, 1, True, 0xA5)]
    ),
    Case(
        "in eax,dx zero-extends",
        "ed",
        [],
        {RAX: 0xA5A5A5A5},
        gprs={RDX: 0x3F8},
        io=(0x3F8, 4, True),
        ports=[(0x3F8, 4, True, 0xA5A5A5A5)],
    ),
    Case("out dx,ax", "66ef", [], gprs={RDX: 0x3F8}, io=(0x3F8, 2, False), ports=[(0x3F8, 2, False, 0x7788)]),
    Case("out 0x80,al", "e680", [], io=(0x80, 1, False), ports=[(0x80, 1, False, 0x88)]),
    Case(
        "rep insw to RAM",
        "66f36d",
        [],
        {RDI: DATA + 4, RCX: 0},
        gprs={RDX: 0x3F8, RDI: DATA, RCX: 2},
        io=(0x3F8, 2, True),
        ports=[(0x3F8, 2, True, 0xA5A5), (0x3F8, 2, True, 0xA5A5)],
        ram_after={DATA: (4, 0xA5A5A5A5)},
    ),
    Case(
        "rep outsb from MMIO: read, out, read, out",
        "f36e",
        [(0, 1, R, 0xF0), (1, 1, R, 0xDE), (2, 1, R, 0xBC)],
        {RSI: MMIO + 3, RCX: 0},
        gprs={RDX: 0x3F8, RSI: MMIO, RCX: 3},
        io=(0x3F8, 1, False),
        ports=[(0x3F8, 1, False, 0xF0), (0x3F8, 1, False, 0xDE), (0x3F8, 1, False, 0xBC)],
    ),
]


def run_case(case: Case) -> None:
    code = bytes.fromhex(case.code)
    gprs = dict(BASE_GPRS)
    gprs.update(case.gprs)
    guest = Guest(code, gprs, rflags=0x2 | case.rflags)
    guest.backend.control.segs[4].base = case.fs_base
    for off, value in DEVICE.items():
        guest.device.load(off, value.to_bytes(8, "little"))
    for gpa, value in case.ram.items():
        guest.vm.memory.write_int(gpa, 8, value)
    if case.io is not None:
        guest.io(*case.io)
    else:
        guest.fault(case.fault)
    before = guest.regs.copy()

    exits = guest.run_to_halt()

    # The exit sequence is exactly one exit per request, in order, then HLT.
    requests = [e for e in exits if isinstance(e, MmioExit | InoutExit)]
    assert len(requests) == len(case.trace) + len(case.ports)
    assert isinstance(exits[-1], HltExit)
    assert [(g - MMIO, s, w, d) for g, s, w, d in guest.device.trace] == case.trace
    assert guest.ports.trace == case.ports
    assert guest.backend.injected == []
    expected = list(before.gprs)
    for n, v in case.regs.items():
        expected[n] = v
    assert [hex(v) for v in guest.regs.gprs] == [hex(v) for v in expected]
    assert guest.regs.rip == before.rip + len(code)
    want_flags = (before.rflags & STATUS_FLAGS) if case.flags is None else case.flags
    assert hex(guest.regs.rflags & STATUS_FLAGS) == hex(want_flags)
    assert guest.regs.rflags & ~STATUS_FLAGS == before.rflags & ~STATUS_FLAGS
    for gpa, (size, value) in case.ram_after.items():
        assert hex(guest.vm.memory.read_int(gpa, size)) == hex(value)


@pytest.mark.parametrize("case", MOVES, ids=ids(MOVES))
def test_moves(case: Case) -> None:
    run_case(case)


@pytest.mark.parametrize("case", ALU, ids=ids(ALU))
def test_alu(case: Case) -> None:
    run_case(case)


@pytest.mark.parametrize("case", BITS, ids=ids(BITS))
def test_bits_and_flush(case: Case) -> None:
    run_case(case)


@pytest.mark.parametrize("case", STACK, ids=ids(STACK))
def test_stack(case: Case) -> None:
    run_case(case)


@pytest.mark.parametrize("case", STRINGS, ids=ids(STRINGS))
def test_strings(case: Case) -> None:
    run_case(case)


@pytest.mark.parametrize("case", PORTS, ids=ids(PORTS))
def test_ports(case: Case) -> None:
    run_case(case)


def test_rows_cover_every_registered_form() -> None:
    """Each registered semantic function is exercised by at least one row above."""
    from test_forms_integer import FORM_ROWS  # the rest of the integer instruction set
    from test_forms_vector import ALL_ROWS as VECTOR_ROWS  # the vector moves (tests/test_forms_vector.py)

    from vmmio.vmm.semantics import FORMS, lookup
    from vmmio.x86.decode import decode
    from vmmio.x86.insn import Insn

    covered = set()
    for case in MOVES + ALU + BITS + STACK + STRINGS + PORTS + FORM_ROWS + VECTOR_ROWS:
        insn = decode(bytes.fromhex(case.code), 64)
        assert isinstance(insn, Insn), case.name
        form = lookup(insn)
        assert form is not None, case.name
        covered.add(form.fn)
    from test_forms_control import MODE_BITS, ROWS  # the stack, control, segment and system forms

    for row in ROWS:
        insn = decode(bytes.fromhex(row.code), MODE_BITS[row.mode])
        if isinstance(insn, Insn) and (form := lookup(insn)) is not None:
            covered.add(form.fn)
    assert {f.fn for f in FORMS.values()} - covered == set()
