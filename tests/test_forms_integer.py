"""The rest of the integer instruction set, driven through the Vcpu on the scripted backend.

Rows as in tests/test_vcpu_forms.py: the instruction, the registers before, the exact device-visible
request sequence (offset from the device base, size, write?, data), the registers that change and the
status flags after. The results and flags of the valid rows were taken from the host CPU (an Intel
Rocket Lake Xeon) running each instruction with the same registers and memory, and
`test_rows_agree_with_the_host_cpu` runs them there again; request sequences are the CPU's access order
(read before write, a read-modify-write always writes, even when nothing changes: see
`test_host_writes_back_what_vmmio_writes_back`, which watches the host CPU's writes with hardware
watchpoints). Undefined flags are asserted too, at the values vmmio documents (vmmio/x86/flags.py),
which are the host's: `test_undefined_flags_match_the_host_cpu` checks them with random operands.
Further rows cover the faults (#DE, #UD for missing CPUID features, VEX.L and illegal LOCK, #GP(0)
for a misaligned CMPXCHG16B) and 32-bit protected mode.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from harness import MMIO, Guest
from oracles.gen import WINDOW, WINDOW_SIZE
from oracles.gen import Case as OracleCase
from oracles.native_run import NativeRunner, build_runner, unavailable_reason
from oracles.outcome import compare
from oracles.vmmio_run import run_vmmio
from test_modes import protected
from test_vcpu_forms import BASE_GPRS, DEVICE

from vmmio.abi import HltExit, MmioExit
from vmmio.backends.scripted import ScriptedBackend
from vmmio.vmm.semantics.crc32 import crc32c
from vmmio.x86.cpuid import ALL_FEATURES
from vmmio.x86.faults import DE, GP, UD
from vmmio.x86.flags import ShiftOp
from vmmio.x86.regs import AF, CF, MASK, OF, PF, SF, STATUS_FLAGS, ZF

RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI = range(8)  # vmmio.x86.regs.Gpr numbering
W, R = True, False
M64 = (1 << 64) - 1


@dataclass
class Row:
    name: str
    code: str
    trace: list[tuple[int, int, bool, int]]
    regs: dict[int, int] = field(default_factory=dict)  # expected changes
    flags: int | None = None  # expected status flags (None: unchanged)
    gprs: dict[int, int] = field(default_factory=dict)  # set before, on top of BASE_GPRS
    rflags: int = 0  # status flags before
    raises: tuple[int, int | None] | None = None  # (vector, error code) injected instead of completing
    without: tuple[str, ...] = ()  # CPUID features the guest's CPU lacks
    mode: int = 64  # 32: flat protected mode, no paging; 16: 16-bit protected mode, DS based at MMIO
    fs_base: int = 0


ATOMIC = [
    Row(
        "cmpxchg [rbx],ecx equal: stores ecx, rax kept",
        "0fb10b",
        [(0x0, 4, R, 0x9ABCDEF0), (0x0, 4, W, 0x44332211)],
        {},
        flags=PF | ZF,
        gprs={RAX: 0xAAAAAAAA9ABCDEF0},
    ),
    Row(
        "cmpxchg [rbx],ecx unequal: writes the old value back, loads eax",
        "0fb10b",
        [(0x0, 4, R, 0x9ABCDEF0), (0x0, 4, W, 0x9ABCDEF0)],
        {RAX: 0x9ABCDEF0},
        flags=CF | SF | OF,
    ),
    Row(
        "cmpxchg [rbx],cl unequal",
        "0fb00b",
        [(0x0, 1, R, 0xF0), (0x0, 1, W, 0xF0)],
        {RAX: 0x11223344556677F0},
        flags=CF | SF,
    ),
    Row(
        "cmpxchg [rbx],cl equal",
        "0fb00b",
        [(0x0, 1, R, 0xF0), (0x0, 1, W, 0x11)],
        {},
        flags=PF | ZF,
        gprs={RAX: 0xF0},
    ),
    Row(
        "cmpxchg [rbx],cx equal",
        "660fb10b",
        [(0x0, 2, R, 0xDEF0), (0x0, 2, W, 0x2211)],
        {},
        flags=PF | ZF,
        gprs={RAX: 0xDEF0},
    ),
    Row(
        "cmpxchg [rbx],rcx equal",
        "480fb10b",
        [(0x0, 8, R, 0x123456789ABCDEF0), (0x0, 8, W, 0x8877665544332211)],
        {},
        flags=PF | ZF,
        gprs={RAX: 0x123456789ABCDEF0},
    ),
    Row(
        "cmpxchg [rbx],rcx unequal",
        "480fb10b",
        [(0x0, 8, R, 0x123456789ABCDEF0), (0x0, 8, W, 0x123456789ABCDEF0)],
        {RAX: 0x123456789ABCDEF0},
        flags=CF | SF,
    ),
    Row(
        "lock cmpxchg [rbx],ecx unequal",
        "f00fb10b",
        [(0x0, 4, R, 0x9ABCDEF0), (0x0, 4, W, 0x9ABCDEF0)],
        {RAX: 0x9ABCDEF0},
        flags=CF | SF | OF,
    ),
    Row(
        "cmpxchg ecx,edx unequal: ecx not written, rax zero-extended",
        "0fb1d1",
        [],
        {RAX: 0xFFFFFFFF},
        flags=CF | PF | AF,
        gprs={RAX: 0x5, RCX: 0xFFFFFFFFFFFFFFFF, RDX: 0x7},
    ),
    Row(
        "cmpxchg ecx,edx equal",
        "0fb1d1",
        [],
        {RCX: 0x7},
        flags=PF | ZF,
        gprs={RAX: 0xFFFFFFFFFFFFFFFF, RCX: 0xFFFFFFFFFFFFFFFF, RDX: 0x7},
    ),
    Row(
        "cmpxchg8b [rbx] equal: stores ecx:ebx",
        "0fc70b",
        [(0x0, 8, R, 0x123456789ABCDEF0), (0x0, 8, W, 0x4433221140000000)],
        {},
        flags=CF | ZF,
        gprs={RAX: 0x9ABCDEF0, RDX: 0x12345678},
        rflags=CF,
    ),
    Row(
        "cmpxchg8b [rbx] unequal: writes back, loads edx:eax",
        "0fc70b",
        [(0x0, 8, R, 0x123456789ABCDEF0), (0x0, 8, W, 0x123456789ABCDEF0)],
        {RAX: 0x9ABCDEF0, RDX: 0x12345678},
        flags=CF,
        gprs={RDX: 0xFFFFFFFF00000000},
        rflags=CF | ZF,
    ),
    Row(
        "lock cmpxchg8b [rbx+8] unequal",
        "f00fc74b08",
        [(0x8, 8, R, 0x102030405060708), (0x8, 8, W, 0x102030405060708)],
        {RAX: 0x5060708, RDX: 0x1020304},
        flags=0,
        rflags=ZF,
    ),
    Row(
        "cmpxchg16b [rbx] equal: two reads, two writes",
        "480fc70b",
        [
            (0x0, 8, R, 0x123456789ABCDEF0),
            (0x8, 8, R, 0x102030405060708),
            (0x0, 8, W, 0x40000000),
            (0x8, 8, W, 0x8877665544332211),
        ],
        {},
        flags=ZF,
        gprs={RAX: 0x123456789ABCDEF0, RDX: 0x102030405060708},
    ),
    Row(
        "cmpxchg16b [rbx] unequal",
        "480fc70b",
        [
            (0x0, 8, R, 0x123456789ABCDEF0),
            (0x8, 8, R, 0x102030405060708),
            (0x0, 8, W, 0x123456789ABCDEF0),
            (0x8, 8, W, 0x102030405060708),
        ],
        {RAX: 0x123456789ABCDEF0},
        flags=SF,
        gprs={RDX: 0x102030405060708},
        rflags=ZF | SF,
    ),
    Row(
        "xadd [rbx],ecx",
        "0fc10b",
        [(0x0, 4, R, 0x9ABCDEF0), (0x0, 4, W, 0xDEF00101)],
        {RCX: 0x9ABCDEF0},
        flags=SF,
    ),
    Row(
        "xadd [rbx],cl", "0fc00b", [(0x0, 1, R, 0xF0), (0x0, 1, W, 0x1)], {RCX: 0x88776655443322F0}, flags=CF
    ),
    Row(
        "xadd [rbx],cx",
        "660fc10b",
        [(0x0, 2, R, 0xDEF0), (0x0, 2, W, 0x101)],
        {RCX: 0x887766554433DEF0},
        flags=CF,
    ),
    Row(
        "lock xadd [rbx],rcx",
        "f0480fc10b",
        [(0x0, 8, R, 0x123456789ABCDEF0), (0x0, 8, W, 0x9AABBCCDDEF00101)],
        {RCX: 0x123456789ABCDEF0},
        flags=SF,
    ),
    Row(
        "xadd [rbx+8],rbx: the store goes where rbx pointed before",
        "480fc15b08",
        [(0x8, 8, R, 0x102030405060708), (0x8, 8, W, 0x102030445060708)],
        {RBX: 0x102030405060708},
        flags=0,
    ),
    Row("xadd eax,eax: the sum wins", "0fc1c0", [], {RAX: 0xAACCEF10}, flags=AF | SF | OF),
    Row("xadd ecx,eax register form", "0fc1c1", [], {RAX: 0x44332211, RCX: 0x99999999}, flags=PF | SF | OF),
]
SHIFTS = [
    Row("shl byte [rbx],imm 3", "c02303", [(0x0, 1, R, 0xF0), (0x0, 1, W, 0x80)], {}, flags=CF | SF),
    Row(
        "rcr byte [rbx],imm 0: masked to 0, still written",
        "c01b00",
        [(0x0, 1, R, 0xF0), (0x0, 1, W, 0xF0)],
        {},
        flags=CF | OF,
        rflags=CF | OF,
    ),
    Row(
        "rol dword [rbx],cl=8",
        "d303",
        [(0x0, 4, R, 0x9ABCDEF0), (0x0, 4, W, 0xBCDEF09A)],
        {},
        flags=OF,
        gprs={RCX: 0x8},
    ),
    Row(
        "rol byte [rbx],cl=8: rotates by 0, CF and OF still set",
        "d203",
        [(0x0, 1, R, 0xF0), (0x0, 1, W, 0xF0)],
        {},
        flags=ZF,
        gprs={RCX: 0x8},
        rflags=ZF,
    ),
    Row("ror byte [rbx],1", "d00b", [(0x0, 1, R, 0xF0), (0x0, 1, W, 0x78)], {}, flags=OF),
    Row(
        "ror qword [rbx],imm 12",
        "48c10b0c",
        [(0x0, 8, R, 0x123456789ABCDEF0), (0x0, 8, W, 0xEF0123456789ABCD)],
        {},
        flags=CF,
    ),
    Row(
        "rcl word [rbx],1 with CF",
        "66d113",
        [(0x0, 2, R, 0xDEF0), (0x0, 2, W, 0xBDE1)],
        {},
        flags=CF,
        rflags=CF,
    ),
    Row(
        "rcl dword [rbx],cl=31",
        "d313",
        [(0x0, 4, R, 0x9ABCDEF0), (0x0, 4, W, 0x26AF37BC)],
        {},
        flags=OF,
        gprs={RCX: 0x1F},
    ),
    Row(
        "rcl byte [rbx],cl=9: a full turn, no flag changes, still written",
        "d213",
        [(0x0, 1, R, 0xF0), (0x0, 1, W, 0xF0)],
        {},
        flags=CF | ZF | OF,
        gprs={RCX: 0x9},
        rflags=CF | ZF | OF,
    ),
    Row(
        "rcr dword [rbx],imm 4 with CF",
        "c11b04",
        [(0x0, 4, R, 0x9ABCDEF0), (0x0, 4, W, 0x19ABCDEF)],
        {},
        flags=0,
        rflags=CF,
    ),
    Row(
        "rcr word [rbx],cl=17: a full turn",
        "66d31b",
        [(0x0, 2, R, 0xDEF0), (0x0, 2, W, 0xDEF0)],
        {},
        flags=SF | OF,
        gprs={RCX: 0x11},
        rflags=SF | OF,
    ),
    Row(
        "rcr qword [rbx],1",
        "48d11b",
        [(0x0, 8, R, 0x123456789ABCDEF0), (0x0, 8, W, 0x91A2B3C4D5E6F78)],
        {},
        flags=0,
    ),
    Row("shl dword [rbx],1", "d123", [(0x0, 4, R, 0x9ABCDEF0), (0x0, 4, W, 0x3579BDE0)], {}, flags=CF | OF),
    Row(
        "shl byte [rbx],cl=8: CF is bit 0, result 0",
        "d223",
        [(0x0, 1, R, 0xF0), (0x0, 1, W, 0x0)],
        {},
        flags=PF | ZF,
        gprs={RCX: 0x8},
    ),
    Row(
        "shl word [rbx],cl=20: past the width",
        "66d323",
        [(0x0, 2, R, 0xDEF0), (0x0, 2, W, 0x0)],
        {},
        flags=PF | ZF,
        gprs={RCX: 0x14},
        rflags=CF | OF,
    ),
    Row(
        "shl dword [rbx],cl=32: masked to 0, flags kept, still written",
        "d323",
        [(0x0, 4, R, 0x9ABCDEF0), (0x0, 4, W, 0x9ABCDEF0)],
        {},
        flags=CF | AF | OF,
        gprs={RCX: 0x20},
        rflags=CF | AF | OF,
    ),
    Row(
        "shl qword [rbx],cl=64: masked to 0",
        "48d323",
        [(0x0, 8, R, 0x123456789ABCDEF0), (0x0, 8, W, 0x123456789ABCDEF0)],
        {},
        flags=PF | SF,
        gprs={RCX: 0x40},
        rflags=PF | SF,
    ),
    Row(
        "sal qword [rbx],imm 8 (/6 alias)",
        "48c13308",
        [(0x0, 8, R, 0x123456789ABCDEF0), (0x0, 8, W, 0x3456789ABCDEF000)],
        {},
        flags=PF,
    ),
    Row(
        "shr byte [rbx],cl=4",
        "d22b",
        [(0x0, 1, R, 0xF0), (0x0, 1, W, 0xF)],
        {},
        flags=PF | OF,
        gprs={RCX: 0x4},
    ),
    Row(
        "shr qword [rbx],cl=63",
        "48d32b",
        [(0x0, 8, R, 0x123456789ABCDEF0), (0x0, 8, W, 0x0)],
        {},
        flags=PF | ZF,
        gprs={RCX: 0x3F},
    ),
    Row("shr word [rbx],1", "66d12b", [(0x0, 2, R, 0xDEF0), (0x0, 2, W, 0x6F78)], {}, flags=PF | OF),
    Row("sar word [rbx],imm 4", "66c13b04", [(0x0, 2, R, 0xDEF0), (0x0, 2, W, 0xFDEF)], {}, flags=SF),
    Row(
        "sar byte [rbx],cl=12: past the width, all sign",
        "d23b",
        [(0x0, 1, R, 0xF0), (0x0, 1, W, 0xFF)],
        {},
        flags=CF | PF | SF,
        gprs={RCX: 0xC},
    ),
    Row(
        "sar dword [rbx+0x10],1",
        "d17b10",
        [(0x10, 4, R, 0x80000000), (0x10, 4, W, 0xC0000000)],
        {},
        flags=PF | SF,
    ),
    Row(
        "sar qword [rbx+0x10],imm 33",
        "48c17b1021",
        [(0x10, 8, R, 0xFFFFFFFF80000000), (0x10, 8, W, 0xFFFFFFFFFFFFFFFF)],
        {},
        flags=CF | PF | SF,
    ),
    Row(
        "shl eax,cl=0: register form still zero-extends",
        "d3e0",
        [],
        {RAX: 0x55667788},
        flags=CF,
        gprs={RCX: 0x0},
        rflags=CF,
    ),
    Row(
        "shld dword [rbx],ecx,imm 4",
        "0fa40b04",
        [(0x0, 4, R, 0x9ABCDEF0), (0x0, 4, W, 0xABCDEF04)],
        {},
        flags=CF | SF | OF,
    ),
    Row(
        "shld qword [rbx],rcx,cl=60",
        "480fa50b",
        [(0x0, 8, R, 0x123456789ABCDEF0), (0x0, 8, W, 0x887766554433223)],
        {},
        flags=CF,
        gprs={RCX: 0x887766554433223C},
    ),
    Row(
        "shld word [rbx],cx,cl=9",
        "660fa50b",
        [(0x0, 2, R, 0xDEF0), (0x0, 2, W, 0xE044)],
        {},
        flags=CF | PF | SF,
        gprs={RCX: 0x8877665544332209},
    ),
    Row(
        "shld word [rbx],cx,cl=20: count above 16 (undefined), the host's 48-bit rule",
        "660fa50b",
        [(0x0, 2, R, 0xDEF0), (0x0, 2, W, 0x214D)],
        {},
        flags=PF,
        gprs={RCX: 0x8877665544332214},
    ),
    Row(
        "shrd word [rbx],cx,cl=20: count above 16",
        "660fad0b",
        [(0x0, 2, R, 0xDEF0), (0x0, 2, W, 0x221)],
        {},
        flags=PF | OF,
        gprs={RCX: 0x8877665544332214},
    ),
    Row(
        "shrd dword [rbx],ecx,imm 1",
        "0fac0b01",
        [(0x0, 4, R, 0x9ABCDEF0), (0x0, 4, W, 0xCD5E6F78)],
        {},
        flags=PF | SF,
    ),
    Row(
        "shrd qword [rbx],rcx,cl=0: nothing changes, still written",
        "480fad0b",
        [(0x0, 8, R, 0x123456789ABCDEF0), (0x0, 8, W, 0x123456789ABCDEF0)],
        {},
        flags=ZF | SF,
        gprs={RCX: 0x8877665544332200},
        rflags=ZF | SF,
    ),
    Row(
        "shld eax,edx,cl=0: register form still zero-extends",
        "0fa5d0",
        [],
        {RAX: 0x55667788},
        flags=0,
        gprs={RCX: 0x0},
    ),
]
MULDIV = [
    Row(
        "mul byte [rbx]: AX = AL * m8",
        "f623",
        [(0x0, 1, R, 0xF0)],
        {RAX: 0x1122334455667F80},
        flags=CF | SF | OF,
    ),
    Row(
        "mul word [rbx]",
        "66f723",
        [(0x0, 2, R, 0xDEF0)],
        {RAX: 0x112233445566FF80, RDX: 0x6817},
        flags=CF | SF | OF,
    ),
    Row(
        "mul dword [rbx]: edx:eax, both zero-extended",
        "f723",
        [(0x0, 4, R, 0x9ABCDEF0)],
        {RAX: 0x8397FF80, RDX: 0x339EA586},
        flags=CF | SF | OF,
        gprs={RDX: 0xFFFFFFFFFFFFFFFF},
    ),
    Row(
        "mul qword [rbx]",
        "48f723",
        [(0x0, 8, R, 0x123456789ABCDEF0)],
        {RAX: 0xC5E365068397FF80, RDX: 0x137E856C77EC0D0},
        flags=CF | SF | OF,
    ),
    Row(
        "mul dword [rbx+0x20]: a zero product",
        "f76320",
        [(0x20, 4, R, 0x0)],
        {RAX: 0x0},
        flags=PF,
        rflags=CF | AF | ZF | SF,
    ),
    Row("imul byte [rbx]", "f62b", [(0x0, 1, R, 0xF0)], {RAX: 0x1122334455660780}, flags=CF | SF | OF),
    Row(
        "imul word [rbx]",
        "66f72b",
        [(0x0, 2, R, 0xDEF0)],
        {RAX: 0x112233445566FF80, RDX: 0xF08F},
        flags=CF | SF | OF,
    ),
    Row(
        "imul dword [rbx+8]: fits, CF=OF=0",
        "f76b08",
        [(0x8, 4, R, 0x5060708)],
        {RAX: 0xF121518},
        flags=PF,
        gprs={RAX: 0x3},
    ),
    Row(
        "imul qword [rbx]",
        "48f72b",
        [(0x0, 8, R, 0x123456789ABCDEF0)],
        {RAX: 0xC5E365068397FF80, RDX: 0x137E856C77EC0D0},
        flags=CF | SF | OF,
    ),
    Row(
        "div byte [rbx]: AL quotient, AH remainder",
        "f633",
        [(0x0, 1, R, 0xF0)],
        {RAX: 0x6413},
        flags=0,
        gprs={RAX: 0x1234},
    ),
    Row(
        "div word [rbx]",
        "66f733",
        [(0x0, 2, R, 0xDEF0)],
        {RAX: 0x11223344556614E7, RDX: 0x8CF8},
        flags=0,
        gprs={RDX: 0x1234},
    ),
    Row(
        "div dword [rbx]",
        "f733",
        [(0x0, 4, R, 0x9ABCDEF0)],
        {RAX: 0x1E1E, RDX: 0x11243768},
        flags=CF | ZF | OF,
        gprs={RDX: 0x1234},
        rflags=CF | ZF | OF,
    ),
    Row(
        "div qword [rbx]",
        "48f733",
        [(0x0, 8, R, 0x123456789ABCDEF0)],
        {RAX: 0xE0000000000000D3, RDX: 0xFFEEDDCCBBAB7B8},
        flags=0,
        gprs={RDX: 0xFEDCBA987654321},
    ),
    Row(
        "idiv byte [rbx]: negative divisor",
        "f63b",
        [(0x0, 1, R, 0xF0)],
        {RAX: 0x3EE},
        flags=0,
        gprs={RAX: 0x123},
    ),
    Row(
        "idiv word [rbx]: negative dividend",
        "66f73b",
        [(0x0, 2, R, 0xDEF0)],
        {RAX: 0x7, RDX: 0xF9A4},
        flags=0,
        gprs={RAX: 0x1234, RDX: 0xFFFF},
    ),
    Row(
        "idiv dword [rbx+0x10]",
        "f77b10",
        [(0x10, 4, R, 0x80000000)],
        {RAX: 0x1, RDX: 0x92345678},
        flags=0,
        gprs={RAX: 0x12345678, RDX: 0xFFFFFFFF},
    ),
    Row(
        "idiv qword [rbx]: negative dividend, positive divisor",
        "48f73b",
        [(0x0, 8, R, 0x123456789ABCDEF0)],
        {RAX: 0xFFFFFFFFFFFFFFF9, RDX: 0xFF6E5D4C3B2A1891},
        flags=0,
        gprs={RDX: 0xFFFFFFFFFFFFFFFF, RAX: 0x8000000000000001},
    ),
    Row("imul ecx,[rbx]", "0faf0b", [(0x0, 4, R, 0x9ABCDEF0)], {RCX: 0x85F6ADF0}, flags=CF | PF | SF | OF),
    Row("imul cx,[rbx]", "660faf0b", [(0x0, 2, R, 0xDEF0)], {RCX: 0xBDE0}, flags=SF, gprs={RCX: 0x2}),
    Row(
        "imul rcx,[rbx],imm32 0x12345",
        "48690b45230100",
        [(0x0, 8, R, 0x123456789ABCDEF0)],
        {RCX: 0x666666666652E6B0},
        flags=CF | OF,
    ),
    Row("imul cx,[rbx],imm8 -3", "666b0bfd", [(0x0, 2, R, 0xDEF0)], {RCX: 0x8877665544336330}, flags=PF),
    Row(
        "imul ecx,[rbx+8],imm32 fits", "694b0810000000", [(0x8, 4, R, 0x5060708)], {RCX: 0x50607080}, flags=0
    ),
]
CONDITIONAL = [
    Row("seto [rbx]", "0f9003", [(0x0, 1, W, 0x1)], {}, flags=OF, rflags=OF),
    Row("setno [rbx]", "0f9103", [(0x0, 1, W, 0x0)], {}, flags=OF, rflags=OF),
    Row("setb [rbx]", "0f9203", [(0x0, 1, W, 0x1)], {}, flags=CF, rflags=CF),
    Row("setae [rbx]", "0f9303", [(0x0, 1, W, 0x1)], {}, flags=0),
    Row("sete [rbx]", "0f9403", [(0x0, 1, W, 0x1)], {}, flags=ZF, rflags=ZF),
    Row("setne [rbx]", "0f9503", [(0x0, 1, W, 0x0)], {}, flags=ZF, rflags=ZF),
    Row("setbe [rbx]", "0f9603", [(0x0, 1, W, 0x1)], {}, flags=ZF, rflags=ZF),
    Row("seta [rbx]", "0f9703", [(0x0, 1, W, 0x0)], {}, flags=CF, rflags=CF),
    Row("sets [rbx]", "0f9803", [(0x0, 1, W, 0x1)], {}, flags=SF, rflags=SF),
    Row("setns [rbx]", "0f9903", [(0x0, 1, W, 0x1)], {}, flags=0),
    Row("setp [rbx]", "0f9a03", [(0x0, 1, W, 0x1)], {}, flags=PF, rflags=PF),
    Row("setnp [rbx]", "0f9b03", [(0x0, 1, W, 0x0)], {}, flags=PF, rflags=PF),
    Row("setl [rbx]", "0f9c03", [(0x0, 1, W, 0x1)], {}, flags=SF, rflags=SF),
    Row("setge [rbx]", "0f9d03", [(0x0, 1, W, 0x1)], {}, flags=SF | OF, rflags=SF | OF),
    Row("setle [rbx]", "0f9e03", [(0x0, 1, W, 0x1)], {}, flags=OF, rflags=OF),
    Row("setg [rbx]", "0f9f03", [(0x0, 1, W, 0x1)], {}, flags=SF | OF, rflags=SF | OF),
    Row("sete cl: register form", "0f94c1", [], {RCX: 0x8877665544332201}, flags=ZF, rflags=ZF),
    Row("setne ah: register form, a high byte", "0f95c4", [], {RAX: 0x1122334455660188}, flags=0),
    Row("cmove eax,[rbx] true", "0f4403", [(0x0, 4, R, 0x9ABCDEF0)], {RAX: 0x9ABCDEF0}, flags=ZF, rflags=ZF),
    Row(
        "cmove eax,[rbx] false: still reads, still zero-extends eax",
        "0f4403",
        [(0x0, 4, R, 0x9ABCDEF0)],
        {RAX: 0x55667788},
        flags=0,
    ),
    Row(
        "cmovne rax,[rbx] false: rax kept",
        "480f4503",
        [(0x0, 8, R, 0x123456789ABCDEF0)],
        {},
        flags=ZF,
        rflags=ZF,
    ),
    Row(
        "cmovb rax,[rbx] true",
        "480f4203",
        [(0x0, 8, R, 0x123456789ABCDEF0)],
        {RAX: 0x123456789ABCDEF0},
        flags=CF,
        rflags=CF,
    ),
    Row("cmovg cx,[rbx] true", "660f4f0b", [(0x0, 2, R, 0xDEF0)], {RCX: 0x887766554433DEF0}, flags=0),
    Row("cmovle cx,[rbx] false: cx kept", "660f4e0b", [(0x0, 2, R, 0xDEF0)], {}, flags=0),
    Row(
        "cmovp ecx,[rbx+8] true", "0f4a4b08", [(0x8, 4, R, 0x5060708)], {RCX: 0x5060708}, flags=PF, rflags=PF
    ),
    Row("cmovo ecx,[rbx+8] false", "0f404b08", [(0x8, 4, R, 0x5060708)], {RCX: 0x44332211}, flags=0),
]
BITSCAN = [
    Row("bsf eax,[rbx]", "0fbc03", [(0x0, 4, R, 0x9ABCDEF0)], {RAX: 0x4}, flags=0, rflags=CF | ZF | SF | OF),
    Row("bsr rax,[rbx]", "480fbd03", [(0x0, 8, R, 0x123456789ABCDEF0)], {RAX: 0x3C}, flags=PF),
    Row("bsf ecx,[rbx+8]: result 0", "0fbc4b08", [(0x8, 4, R, 0x5060708)], {RCX: 0x3}, flags=PF),
    Row(
        "bsf eax,[rbx+0x20]: zero source, ZF, rax kept whole",
        "0fbc4320",
        [(0x20, 4, R, 0x0)],
        {},
        flags=PF | ZF,
    ),
    Row(
        "bsr rax,[rbx+0x20]: zero source",
        "480fbd4320",
        [(0x20, 8, R, 0x0)],
        {},
        flags=PF | ZF,
        rflags=CF | SF,
    ),
    Row("bsr cx,[rbx]", "660fbd0b", [(0x0, 2, R, 0xDEF0)], {RCX: 0x887766554433000F}, flags=PF),
    Row("tzcnt eax,[rbx]", "f30fbc03", [(0x0, 4, R, 0x9ABCDEF0)], {RAX: 0x4}, flags=0, rflags=CF | PF | ZF),
    Row(
        "tzcnt eax,[rbx+0x20]: zero source, 32 and CF",
        "f30fbc4320",
        [(0x20, 4, R, 0x0)],
        {RAX: 0x20},
        flags=CF,
    ),
    Row(
        "tzcnt cx,[rbx+8]: result 0, ZF",
        "66f30fbc4b08",
        [(0x8, 2, R, 0x708)],
        {RCX: 0x8877665544330003},
        flags=0,
    ),
    Row("lzcnt rax,[rbx]", "f3480fbd03", [(0x0, 8, R, 0x123456789ABCDEF0)], {RAX: 0x3}, flags=0),
    Row(
        "lzcnt cx,[rbx+0x20]: zero source",
        "66f30fbd4b20",
        [(0x20, 2, R, 0x0)],
        {RCX: 0x8877665544330010},
        flags=CF,
    ),
    Row("lzcnt eax,[rbx+0x10]: result 0, ZF", "f30fbd4310", [(0x10, 4, R, 0x80000000)], {RAX: 0x0}, flags=ZF),
    Row(
        "popcnt eax,[rbx]",
        "f30fb803",
        [(0x0, 4, R, 0x9ABCDEF0)],
        {RAX: 0x13},
        flags=0,
        rflags=CF | PF | AF | SF | OF,
    ),
    Row("popcnt rax,[rbx+0x20]: zero, ZF", "f3480fb84320", [(0x20, 8, R, 0x0)], {RAX: 0x0}, flags=ZF),
    Row("popcnt cx,[rbx+0x10]", "66f30fb84b10", [(0x10, 2, R, 0x0)], {RCX: 0x8877665544330000}, flags=ZF),
]
EXTENSIONS = [
    Row("movbe eax,[rbx]", "0f38f003", [(0x0, 4, R, 0x9ABCDEF0)], {RAX: 0xF0DEBC9A}, flags=0),
    Row(
        "movbe cx,[rbx]: upper bits kept",
        "660f38f00b",
        [(0x0, 2, R, 0xDEF0)],
        {RCX: 0x887766554433F0DE},
        flags=0,
    ),
    Row(
        "movbe rax,[rbx]", "480f38f003", [(0x0, 8, R, 0x123456789ABCDEF0)], {RAX: 0xF0DEBC9A78563412}, flags=0
    ),
    Row("movbe [rbx],ecx", "0f38f10b", [(0x0, 4, W, 0x11223344)], {}, flags=0),
    Row("movbe [rbx],cx", "660f38f10b", [(0x0, 2, W, 0x1122)], {}, flags=0),
    Row("movbe [rbx],rcx", "480f38f10b", [(0x0, 8, W, 0x1122334455667788)], {}, flags=0),
    Row("movnti [rbx],ecx", "0fc30b", [(0x0, 4, W, 0x44332211)], {}, flags=0),
    Row("movnti [rbx],rcx", "480fc30b", [(0x0, 8, W, 0x8877665544332211)], {}, flags=0),
    Row("crc32 eax,byte [rbx]", "f20f38f003", [(0x0, 1, R, 0xF0)], {RAX: 0xFB146AB5}, flags=0),
    Row("crc32 eax,word [rbx]", "66f20f38f103", [(0x0, 2, R, 0xDEF0)], {RAX: 0xF8B42C33}, flags=0),
    Row("crc32 eax,dword [rbx]", "f20f38f103", [(0x0, 4, R, 0x9ABCDEF0)], {RAX: 0x880E9D91}, flags=0),
    Row(
        "crc32 rax,qword [rbx]: 64-bit destination, zero-extended",
        "f2480f38f103",
        [(0x0, 8, R, 0x123456789ABCDEF0)],
        {RAX: 0x984A77DB},
        flags=0,
    ),
    Row("crc32 rax,byte [rbx] (REX.W)", "f2480f38f003", [(0x0, 1, R, 0xF0)], {RAX: 0xFB146AB5}, flags=0),
    Row(
        "adcx eax,[rbx] with CF: only CF changes",
        "660f38f603",
        [(0x0, 4, R, 0x9ABCDEF0)],
        {RAX: 0xF0235679},
        flags=ZF | OF,
        rflags=CF | ZF | OF,
    ),
    Row(
        "adcx rax,[rbx]: a carry out",
        "66480f38f603",
        [(0x0, 8, R, 0x123456789ABCDEF0)],
        {RAX: 0x23456789ABCDEF0},
        flags=CF | PF,
        gprs={RAX: 0xF000000000000000},
        rflags=PF,
    ),
    Row(
        "adox rax,[rbx] with OF: only OF changes",
        "f3480f38f603",
        [(0x0, 8, R, 0x123456789ABCDEF0)],
        {RAX: 0x235689BCF0235679},
        flags=CF,
        rflags=CF | OF,
    ),
    Row(
        "adox eax,[rbx+0x10]: a carry out",
        "f30f38f64310",
        [(0x10, 4, R, 0x80000000)],
        {RAX: 0xD5667788},
        flags=SF,
        rflags=SF,
    ),
]
BMI = [
    Row(
        "andn eax,ecx,[rbx]",
        "c4e270f203",
        [(0x0, 4, R, 0x9ABCDEF0)],
        {RAX: 0x9A8CDCE0},
        flags=SF,
        rflags=CF | PF | AF | OF,
    ),
    Row(
        "andn rax,rcx,[rbx]",
        "c4e2f0f203",
        [(0x0, 8, R, 0x123456789ABCDEF0)],
        {RAX: 0x120010289A8CDCE0},
        flags=0,
    ),
    Row("andn eax,eax,[rbx+0x20]: zero result", "c4e278f24320", [(0x20, 4, R, 0x0)], {RAX: 0x0}, flags=ZF),
    Row(
        "bextr eax,[rbx],ecx: start 4, length 8",
        "c4e270f703",
        [(0x0, 4, R, 0x9ABCDEF0)],
        {RAX: 0xEF},
        flags=0,
        gprs={RCX: 0x804},
    ),
    Row(
        "bextr rax,[rbx],rcx: start 60, length 20",
        "c4e2f0f703",
        [(0x0, 8, R, 0x123456789ABCDEF0)],
        {RAX: 0x1},
        flags=0,
        gprs={RCX: 0x143C},
        rflags=CF | OF,
    ),
    Row(
        "bextr eax,[rbx],ecx: start past the width",
        "c4e270f703",
        [(0x0, 4, R, 0x9ABCDEF0)],
        {RAX: 0x0},
        flags=ZF,
        gprs={RCX: 0x1040},
    ),
    Row("blsi eax,[rbx]", "c4e278f31b", [(0x0, 4, R, 0x9ABCDEF0)], {RAX: 0x10}, flags=CF),
    Row("blsi rdx,[rbx+0x20]: zero source", "c4e2e8f35b20", [(0x20, 8, R, 0x0)], {}, flags=ZF, rflags=CF),
    Row(
        "blsmsk rcx,[rbx]",
        "c4e2f0f313",
        [(0x0, 8, R, 0x123456789ABCDEF0)],
        {RCX: 0x1F},
        flags=0,
        rflags=ZF | SF,
    ),
    Row(
        "blsmsk ecx,[rbx+0x20]: zero source",
        "c4e270f35320",
        [(0x20, 4, R, 0x0)],
        {RCX: 0xFFFFFFFF},
        flags=CF | SF,
    ),
    Row("blsr edx,[rbx]", "c4e268f30b", [(0x0, 4, R, 0x9ABCDEF0)], {RDX: 0x9ABCDEE0}, flags=SF),
    Row("blsr edx,[rbx+0x20]: zero source", "c4e268f34b20", [(0x20, 4, R, 0x0)], {}, flags=CF | ZF),
    Row(
        "bzhi eax,[rbx],ecx: index 12",
        "c4e270f503",
        [(0x0, 4, R, 0x9ABCDEF0)],
        {RAX: 0xEF0},
        flags=0,
        gprs={RCX: 0xC},
    ),
    Row(
        "bzhi rax,[rbx],rcx: index 64, CF",
        "c4e2f0f503",
        [(0x0, 8, R, 0x123456789ABCDEF0)],
        {RAX: 0x123456789ABCDEF0},
        flags=CF,
        gprs={RCX: 0x1240},
    ),
    Row(
        "bzhi eax,[rbx],ecx: index 0",
        "c4e270f503",
        [(0x0, 4, R, 0x9ABCDEF0)],
        {RAX: 0x0},
        flags=ZF,
        gprs={RCX: 0x100},
    ),
    Row(
        "mulx ecx,eax,[rbx]: edx * m32, high to ecx, low to eax",
        "c4e27bf60b",
        [(0x0, 4, R, 0x9ABCDEF0)],
        {RAX: 0xE5618CF0, RCX: 0x51D6CEA7},
        flags=CF,
        gprs={RDX: 0xFFFFFFFF87654321},
        rflags=CF,
    ),
    Row(
        "mulx rcx,rcx,[rbx]: one register, the high half wins",
        "c4e2f3f60b",
        [(0x0, 8, R, 0x123456789ABCDEF0)],
        {RCX: 0x91A2B3C4D5E6F77},
        flags=0,
        gprs={RDX: 0x7FFFFFFFFFFFFFFF},
    ),
    Row("pdep eax,ecx,[rbx]", "c4e273f503", [(0x0, 4, R, 0x9ABCDEF0)], {RAX: 0x18208210}, flags=0),
    Row("pext rax,rcx,[rbx]", "c4e2f2f503", [(0x0, 8, R, 0x123456789ABCDEF0)], {RAX: 0x3DD03011}, flags=0),
    Row(
        "rorx eax,[rbx],8",
        "c4e37bf00308",
        [(0x0, 4, R, 0x9ABCDEF0)],
        {RAX: 0xF09ABCDE},
        flags=CF | OF,
        rflags=CF | OF,
    ),
    Row(
        "rorx rax,[rbx],68: masked to 4",
        "c4e3fbf00344",
        [(0x0, 8, R, 0x123456789ABCDEF0)],
        {RAX: 0x123456789ABCDEF},
        flags=0,
    ),
    Row(
        "sarx eax,[rbx],ecx",
        "c4e272f703",
        [(0x0, 4, R, 0x9ABCDEF0)],
        {RAX: 0xF3579BDE},
        flags=0,
        gprs={RCX: 0x23},
    ),
    Row(
        "shlx rax,[rbx],rcx",
        "c4e2f1f703",
        [(0x0, 8, R, 0x123456789ABCDEF0)],
        {RAX: 0x23456789ABCDEF00},
        flags=0,
        gprs={RCX: 0x44},
    ),
    Row(
        "shrx edx,[rbx],ecx",
        "c4e273f713",
        [(0x0, 4, R, 0x9ABCDEF0)],
        {RDX: 0x9ABCD},
        flags=0,
        gprs={RCX: 0xC},
    ),
    Row(
        "sarx rax,[rbx+0x10],rcx",
        "c4e2f2f74310",
        [(0x10, 8, R, 0xFFFFFFFF80000000)],
        {RAX: 0xFFFFFFFFFFFFFFFF},
        flags=0,
        gprs={RCX: 0x28},
    ),
]

# Faults, CPUID features, prefixes, LOCK and 32-bit mode. Results where the instruction completes are
# those of the corresponding rows above (same operands), worked by hand where they differ.
FAULTS = [
    Row("div dword [rbx+0x20] by zero: #DE after the read", "f77320", [(0x20, 4, R, 0)], raises=(DE, None)),
    Row(
        "div byte [rbx]: quotient 0x100 does not fit: #DE",
        "f633",
        [(0, 1, R, 0xF0)],
        gprs={RAX: 0xF000},
        raises=(DE, None),
    ),
    Row(
        "div qword [rbx]: rdx above the divisor: #DE",
        "48f733",
        [(0, 8, R, 0x123456789ABCDEF0)],
        gprs={RDX: 0x123456789ABCDEF0},
        raises=(DE, None),
    ),
    Row(
        "idiv byte [rbx+0x14]: -128 / -1: #DE",
        "f67b14",
        [(0x14, 1, R, 0xFF)],
        gprs={RAX: 0xFF80},
        raises=(DE, None),
    ),
    Row(
        "idiv rcx: most negative / -1 (register form): #DE",
        "48f7f9",
        [],
        gprs={RAX: 0, RDX: 1 << 63, RCX: M64},
        raises=(DE, None),
    ),
    Row(
        "idiv word [rbx]: quotient below -32768: #DE",
        "66f73b",
        [(0, 2, R, 0xDEF0)],
        gprs={RAX: 0, RDX: 0x4000},
        raises=(DE, None),
    ),
    Row("cmpxchg16b [rbx+8] misaligned: #GP(0) before any access", "480fc74b08", [], raises=(GP, 0)),
    Row("cmpxchg16b without cx16: #UD", "480fc70b", [], raises=(UD, None), without=("cx16",)),
    Row("cmpxchg8b without cx8: #UD", "0fc70b", [], raises=(UD, None), without=("cx8",)),
    Row("cmove without cmov: #UD", "0f4403", [], raises=(UD, None), without=("cmov",)),
    Row("popcnt without popcnt: #UD", "f30fb803", [], raises=(UD, None), without=("popcnt",)),
    Row(
        "tzcnt without bmi1 is bsf: zero source keeps eax",
        "f30fbc4320",
        [(0x20, 4, R, 0)],
        flags=PF | ZF,
        without=("bmi1",),
    ),
    Row(
        "lzcnt without abm is bsr", "f30fbd03", [(0, 4, R, 0x9ABCDEF0)], {RAX: 31}, flags=0, without=("abm",)
    ),
    Row("movbe without movbe: #UD", "0f38f003", [], raises=(UD, None), without=("movbe",)),
    Row("movnti without sse2: #UD", "0fc30b", [], raises=(UD, None), without=("sse2",)),
    Row("crc32 without sse4_2: #UD", "f20f38f003", [], raises=(UD, None), without=("sse4_2",)),
    Row("adcx without adx: #UD", "660f38f603", [], raises=(UD, None), without=("adx",)),
    Row("andn without bmi1: #UD", "c4e270f203", [], raises=(UD, None), without=("bmi1",)),
    Row("pdep without bmi2: #UD", "c4e273f503", [], raises=(UD, None), without=("bmi2",)),
    Row("andn with VEX.L=1: #UD", "c4e274f203", [], raises=(UD, None)),
    Row("rorx with VEX.vvvv 1110b: #UD", "c4e373f00308", [], raises=(UD, None)),
    Row("VEX.0F38 F3 /0 (no BLS* form): #UD", "c4e278f303", [], raises=(UD, None)),
    Row("VEX.66.0F38 F2 (ANDN is np only): #UD", "c4e271f203", [], raises=(UD, None)),
    Row("VEX.66.0F38 F6 (MULX is F2 only): #UD", "c4e279f603", [], raises=(UD, None)),
]

LOCKS = [
    Row("lock shl dword [rbx],1: #UD", "f0d123", [], raises=(UD, None)),
    Row("lock rcr byte [rbx],cl: #UD", "f0d21b", [], raises=(UD, None)),
    Row("lock shld [rbx],ecx,4: #UD", "f00fa40b04", [], raises=(UD, None)),
    Row("lock mul dword [rbx]: #UD", "f0f723", [], raises=(UD, None)),
    Row("lock idiv byte [rbx]: #UD", "f0f63b", [], raises=(UD, None)),
    Row("lock imul ecx,[rbx]: #UD", "f00faf0b", [], raises=(UD, None)),
    Row("lock sete [rbx]: #UD", "f00f9403", [], raises=(UD, None)),
    Row("lock cmove eax,[rbx]: #UD", "f00f4403", [], raises=(UD, None)),
    Row("lock bsf eax,[rbx]: #UD", "f00fbc03", [], raises=(UD, None)),
    Row("lock popcnt eax,[rbx]: #UD", "f0f30fb803", [], raises=(UD, None)),
    Row("lock cmpxchg ecx,edx (register form): #UD", "f00fb1d1", [], raises=(UD, None)),
    Row("lock xadd eax,eax (register form): #UD", "f00fc1c0", [], raises=(UD, None)),
    Row("lock movbe eax,[rbx]: #UD", "f00f38f003", [], raises=(UD, None)),
    Row("lock crc32 eax,byte [rbx]: #UD", "f0f20f38f003", [], raises=(UD, None)),
    Row("lock adcx eax,[rbx]: #UD", "f0660f38f603", [], raises=(UD, None)),
    Row("lock movnti [rbx],ecx: #UD", "f00fc30b", [], raises=(UD, None)),
    Row("lock before VEX (andn): #UD", "f0c4e270f203", [], raises=(UD, None)),
    Row("movbe eax,ecx (register form): #UD", "0f38f0c1", [], raises=(UD, None)),
    Row("cmpxchg8b ecx (register form): #UD", "0fc7c9", [], raises=(UD, None)),
    Row("movnti ecx,eax (register form): #UD", "0fc3c1", [], raises=(UD, None)),
]

PREFIXES = [
    Row(
        "rep shl dword [rbx],1: F3 is ignored",
        "f3d123",
        [(0, 4, R, 0x9ABCDEF0), (0, 4, W, 0x3579BDE0)],
        flags=CF | OF,
    ),
    Row(
        "xacquire lock xadd [rbx],ecx (F2 F0: an HLE hint, executed as LOCK XADD)",
        "f2f00fc10b",
        [(0, 4, R, 0x9ABCDEF0), (0, 4, W, 0xDEF00101)],
        {RCX: 0x9ABCDEF0},
        flags=SF,
    ),
    Row(
        "xrelease lock cmpxchg [rbx],ecx (F3 F0)",
        "f3f00fb10b",
        [(0, 4, R, 0x9ABCDEF0), (0, 4, W, 0x44332211)],
        flags=PF | ZF,
        gprs={RAX: 0x9ABCDEF0},
    ),
    Row(
        "repne bsf eax,[rbx]: F2 is ignored, still BSF",
        "f20fbc03",
        [(0, 4, R, 0x9ABCDEF0)],
        {RAX: 4},
        flags=0,
    ),
    Row(
        "rep imul ecx,[rbx]", "f30faf0b", [(0, 4, R, 0x9ABCDEF0)], {RCX: 0x85F6ADF0}, flags=CF | PF | SF | OF
    ),
    Row(
        "shl dword fs:[rbx],1",
        "64d123",
        [(0, 4, R, 0x9ABCDEF0), (0, 4, W, 0x3579BDE0)],
        flags=CF | OF,
        gprs={RBX: MMIO - 0x1000},
        fs_base=0x1000,
    ),
    Row(
        "cmpxchg [ebx],ecx (67): the address is EBX",
        "670fb10b",
        [(0, 4, R, 0x9ABCDEF0), (0, 4, W, 0x9ABCDEF0)],
        {RAX: 0x9ABCDEF0},
        flags=CF | SF | OF,
        gprs={RBX: 0xFFFFFFFF00000000 | MMIO},
    ),
    Row(
        "andn eax,ecx,fs:[rbx]",
        "64c4e270f203",
        [(0, 4, R, 0x9ABCDEF0)],
        {RAX: 0x9A8CDCE0},
        flags=SF,
        gprs={RBX: MMIO - 0x1000},
        fs_base=0x1000,
    ),
    Row(
        "bsf eax,[ebx+8] (67)",
        "670fbc4308",
        [(8, 4, R, 0x05060708)],
        {RAX: 3},
        flags=PF,
        gprs={RBX: 0xFFFFFFFF00000000 | MMIO},
    ),
    Row(
        "lock cmpxchg16b [rbx+0x100] unequal (LOCK is legal)",
        "f0480fc78b00010000",
        [
            (0x100, 8, R, 0x1111222233334444),
            (0x108, 8, R, 0),
            (0x100, 8, W, 0x1111222233334444),
            (0x108, 8, W, 0),
        ],
        {RAX: 0x1111222233334444, RDX: 0},
        flags=0,
        rflags=ZF,
    ),
]

MODE16 = [
    Row(
        "shl word [bx+si],1 in 16-bit protected mode (DS based at the device)",
        "d120",
        [(0, 2, R, 0xDEF0), (0, 2, W, 0xBDE0)],
        flags=CF | SF,
        gprs={RBX: 0, RSI: 0},
        mode=16,
    ),
    Row(
        "cmpxchg8b [bx] in 16-bit protected mode, unequal",
        "0fc70f",
        [(0, 8, R, 0x123456789ABCDEF0), (0, 8, W, 0x123456789ABCDEF0)],
        {RAX: 0x9ABCDEF0, RDX: 0x12345678},
        flags=0,
        gprs={RAX: 0x55667788, RBX: 0},
        rflags=ZF,
        mode=16,
    ),
    Row(
        "andn eax,ecx,[bx] in 16-bit protected mode: VEX is valid there, W1 ignored",
        "c4e2f0f207",
        [(0, 4, R, 0x9ABCDEF0)],
        {RAX: 0x9A8CDCE0},
        flags=SF,
        gprs={RAX: 0x55667788, RCX: 0x44332211, RBX: 0},
        mode=16,
    ),
    Row(
        "div word [bx] in 16-bit protected mode: DX:AX",
        "f737",
        [(0, 2, R, 0xDEF0)],
        {RAX: 0, RDX: 0x1234},
        gprs={RAX: 0x1234, RDX: 0, RBX: 0},
        mode=16,
    ),
]

MODE32 = [
    Row(
        "andn eax,ecx,[ebx] in 32-bit mode: VEX.W1 is ignored (a dword read)",
        "c4e2f0f203",
        [(0, 4, R, 0x9ABCDEF0)],
        {RAX: 0x9A8CDCE0},
        flags=SF,
        gprs={RAX: 0x55667788, RCX: 0x44332211},
        mode=32,
    ),
    Row(
        "blsr with VEX.vvvv 1010b in 32-bit mode writes edx: the high bit is ignored",
        "c4e228f30b",
        [(0, 4, R, 0x9ABCDEF0)],
        {RDX: 0x9ABCDEE0},
        flags=SF,
        gprs={RAX: 0x55667788, RCX: 0x44332211},
        mode=32,
    ),
    Row(
        "cmpxchg8b [ebx] in 32-bit mode, equal",
        "0fc70b",
        [(0, 8, R, 0x123456789ABCDEF0), (0, 8, W, 0x4433221140000000)],
        flags=ZF,
        gprs={RAX: 0x9ABCDEF0, RDX: 0x12345678, RCX: 0x44332211},
        mode=32,
    ),
    Row(
        "mulx ecx,eax,[ebx] in 32-bit mode (EDX implied)",
        "c4e27bf60b",
        [(0, 4, R, 0x9ABCDEF0)],
        {RAX: 0xE5618CF0, RCX: 0x51D6CEA7},
        gprs={RAX: 0x55667788, RCX: 0x44332211, RDX: 0x87654321},
        mode=32,
    ),
]

FORM_ROWS = ATOMIC + SHIFTS + MULDIV + CONDITIONAL + BITSCAN + EXTENSIONS + BMI
"""The rows of valid 64-bit forms (tests/test_vcpu_forms.py checks that rows cover every registered form)."""
ALL_ROWS = FORM_ROWS + FAULTS + LOCKS + PREFIXES + MODE16 + MODE32


def _guest(row: Row) -> Guest:
    gprs = dict(BASE_GPRS)
    gprs.update(row.gprs)
    guest = Guest(bytes.fromhex(row.code), gprs, rflags=0x2 | row.rflags)
    if row.mode != 64 or row.without:
        modes = {16: protected(16, ds_base=MMIO, ds_limit=0xFFF), 32: protected(32)}
        ctl = modes[row.mode] if row.mode != 64 else guest.backend.control
        guest.backend = ScriptedBackend(guest.regs, ctl, cpuid=ALL_FEATURES.without(*row.without))
        guest.vcpu = guest.vm.create_vcpu(guest.backend)
    guest.backend.control.segs[4].base = row.fs_base
    for off, value in DEVICE.items():
        guest.device.load(off, value.to_bytes(8, "little"))
    return guest


def run_row(row: Row) -> None:
    guest = _guest(row)
    guest.fault(MMIO + (row.trace[0][0] if row.trace else 0))
    before = guest.regs.copy()

    exits = guest.run_to_halt()

    assert [e for e in exits if isinstance(e, MmioExit)] == exits[:-1]
    assert isinstance(exits[-1], HltExit)
    assert [(g - MMIO, s, w, d) for g, s, w, d in guest.device.trace] == row.trace
    if row.raises is not None:
        assert guest.backend.injected == [(*row.raises, None)]
        assert guest.regs == before, "a faulting instruction changes nothing"
        return
    assert guest.backend.injected == []
    expected = list(before.gprs)
    for n, v in row.regs.items():
        expected[n] = v
    assert [hex(v) for v in guest.regs.gprs] == [hex(v) for v in expected]
    assert guest.regs.rip == before.rip + len(row.code) // 2
    want_flags = (before.rflags & STATUS_FLAGS) if row.flags is None else row.flags
    assert hex(guest.regs.rflags & STATUS_FLAGS) == hex(want_flags)
    assert guest.regs.rflags & ~STATUS_FLAGS == before.rflags & ~STATUS_FLAGS


def _ids(rows: list[Row]) -> list[str]:
    return [r.name for r in rows]


@pytest.mark.parametrize("row", ATOMIC, ids=_ids(ATOMIC))
def test_atomic(row: Row) -> None:
    run_row(row)


@pytest.mark.parametrize("row", SHIFTS, ids=_ids(SHIFTS))
def test_shifts(row: Row) -> None:
    run_row(row)


@pytest.mark.parametrize("row", MULDIV, ids=_ids(MULDIV))
def test_muldiv(row: Row) -> None:
    run_row(row)


@pytest.mark.parametrize("row", CONDITIONAL, ids=_ids(CONDITIONAL))
def test_conditional(row: Row) -> None:
    run_row(row)


@pytest.mark.parametrize("row", BITSCAN, ids=_ids(BITSCAN))
def test_bitscan(row: Row) -> None:
    run_row(row)


@pytest.mark.parametrize("row", EXTENSIONS, ids=_ids(EXTENSIONS))
def test_extensions(row: Row) -> None:
    run_row(row)


@pytest.mark.parametrize("row", BMI, ids=_ids(BMI))
def test_bmi(row: Row) -> None:
    run_row(row)


@pytest.mark.parametrize("row", FAULTS, ids=_ids(FAULTS))
def test_faults_and_features(row: Row) -> None:
    run_row(row)


@pytest.mark.parametrize("row", LOCKS, ids=_ids(LOCKS))
def test_lock_rules(row: Row) -> None:
    run_row(row)


@pytest.mark.parametrize("row", PREFIXES + MODE16 + MODE32, ids=_ids(PREFIXES + MODE16 + MODE32))
def test_prefixes_and_modes(row: Row) -> None:
    run_row(row)


def test_crc32c_check_value() -> None:
    """The CRC-32C catalogue check value: "123456789" with the customary inversion in and out."""
    crc = 0xFFFFFFFF
    for byte in b"123456789":
        crc = crc32c(crc, byte, 1)
    assert crc ^ 0xFFFFFFFF == 0xE3069283
    assert crc32c(0xFFFFFFFF, int.from_bytes(b"1234", "little"), 4) == crc32c(
        crc32c(0xFFFFFFFF, int.from_bytes(b"12", "little"), 2), int.from_bytes(b"34", "little"), 2
    )


# --------------------------------------------------------------------------------------------------
# The host CPU as referee: the rows, undefined flags with random operands, and writes that change
# nothing (seen through hardware write watchpoints).
# --------------------------------------------------------------------------------------------------

_FAULT_NAMES = {DE: "#DE", GP: "#GP", UD: "#UD"}


@pytest.fixture(scope="module")
def host() -> Iterator[NativeRunner]:
    why = unavailable_reason()
    if why is not None:
        pytest.skip(why)
    with tempfile.TemporaryDirectory(prefix="vmmio-int-host-") as d:
        runner = NativeRunner(build_runner(Path(d)))
        yield runner
        runner.close()


def _device_bytes() -> bytes:
    buf = bytearray(WINDOW_SIZE)
    for off, value in DEVICE.items():
        buf[off : off + 8] = value.to_bytes(8, "little")
    return bytes(buf)


def _host_case(code: str, gprs: dict[int, int], rflags: int, fs_base: int = 0) -> OracleCase:
    regs = [0] * 16
    for n, v in gprs.items():
        regs[n] = v & M64
    patches = ((WINDOW, _device_bytes()),)
    return OracleCase(
        "row", "row", bytes.fromhex(code), tuple(regs), rflags, fs_base, 0, 1, patches, WINDOW, ()
    )


HOST_ROWS = [r for r in ALL_ROWS if r.mode == 64 and not r.without]


def test_rows_agree_with_the_host_cpu(host: NativeRunner) -> None:
    """Every 64-bit row the host can run (all but the missing-feature ones): same registers, flags,
    exception and device bytes (the trace's writes applied to the device's contents)."""
    assert WINDOW == MMIO
    bad = []
    for row in HOST_ROWS:
        gprs = {**BASE_GPRS, **row.gprs}
        case = _host_case(row.code, gprs, 0x2 | row.rflags, row.fs_base)
        out = host.run(case)
        want_fault = _FAULT_NAMES[row.raises[0]] if row.raises else ""
        regs = [gprs.get(n, 0) & M64 for n in range(16)]
        memory = bytearray(_device_bytes())
        if not row.raises:
            for n, v in row.regs.items():
                regs[n] = v
            for off, size, write, data in row.trace:
                if write:
                    memory[off : off + size] = data.to_bytes(size, "little")
        flags_after = (row.rflags if row.flags is None else row.flags) if not row.raises else row.rflags
        got = (out.fault, [hex(v) for v in out.gprs], hex(out.rflags & STATUS_FLAGS), out.window == memory)
        want = (want_fault, [hex(v) for v in regs], hex(flags_after), True)
        if out.error or got != want:
            bad.append(f"{row.name}: host {got} {out.error}\n    row  {want}")
    assert not bad, "\n".join(bad)


def _operand(rng: random.Random, size: int) -> int:
    bits = 8 * size
    return rng.choice((0, 1, (1 << bits) - 1, 1 << (bits - 1), rng.getrandbits(bits), rng.getrandbits(bits)))


# (code with [rbx] as the memory operand, operand size) for every form with undefined flags (or results)
_SIZED = {1: "", 2: "66", 4: "", 8: "48"}
UNDEFINED_FORMS = (
    [(f"{_SIZED[s]}{'d2' if s == 1 else 'd3'}{op << 3 | 3:02x}", s) for op in ShiftOp for s in (1, 2, 4, 8)]
    + [(f"{_SIZED[s]}0f{op:02x}13", s) for op in (0xA5, 0xAD) for s in (2, 4, 8)]
    + [
        (f"{_SIZED[s]}{'f6' if s == 1 else 'f7'}{op << 3 | 3:02x}", s)
        for op in (4, 5, 6, 7)
        for s in (1, 2, 4, 8)
    ]
    + [(f"{_SIZED[s]}0faf13", s) for s in (2, 4, 8)]
    + [(f"{p}{_SIZED[s]}0f{op:02x}13", s) for p in ("", "f3") for op in (0xBC, 0xBD) for s in (2, 4, 8)]
    + [
        (f"c4e2{w << 7 | 0x70:02x}{op}", s)
        for op in ("f213", "f713", "f31b", "f313", "f30b", "f513")
        for w, s in ((0, 4), (1, 8))
    ]
)


def test_undefined_flags_match_the_host_cpu(host: NativeRunner) -> None:
    """vmmio's documented values for what the SDM leaves undefined (flags; 16-bit SHLD/SHRD beyond 16)
    are the host CPU's: every status flag and every result compared, random operands and counts."""
    rng = random.Random(15)
    bad = []
    for code, size in UNDEFINED_FORMS:
        for _ in range(12):
            gprs = {RAX: rng.getrandbits(64), RCX: rng.getrandbits(64), RDX: rng.getrandbits(64)}
            gprs[RCX] = rng.choice(
                (rng.getrandbits(8), rng.getrandbits(64), 1, 0, 8, 9, 16, 17, 20, 31, 32, 33)
            )
            gprs[RBX] = WINDOW
            if code[-4:] in ("f733", "f73b", "f633", "f63b"):
                gprs[RDX] = 0  # keep most divisions from overflowing
            case = replace(
                _host_case(code, gprs, 0x2 | (rng.getrandbits(12) & STATUS_FLAGS)),
                patches=((WINDOW, _operand(rng, 8).to_bytes(8, "little")),),
            )
            want, got = host.run(case), run_vmmio(case)
            diffs = compare(case, want, got, "host", "vmmio")
            if diffs:
                bad.append(f"{code} ({size}): " + "; ".join(diffs[:3]))
    assert not bad, "\n".join(bad[:20])


WATCH_C = r"""
#define _GNU_SOURCE
#include <linux/hw_breakpoint.h>
#include <linux/perf_event.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Per line "code rax rcx rdx value": run code (its operand [rbx] is an 8-byte buffer holding value)
 * under a hardware write watchpoint on the buffer; print the number of writes and the buffer after. */
static uint64_t buf[2] __attribute__((aligned(16)));
static struct { uint64_t rax, rcx, rdx, rbx; void *code; } in;

int main(void) {
    uint8_t *code = mmap(0, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char hex[64];
    unsigned long long a, c, d, v;
    while (scanf("%63s %llx %llx %llx %llx", hex, &a, &c, &d, &v) == 5) {
        size_t n = strlen(hex) / 2;
        for (size_t i = 0; i < n; i++)
            sscanf(hex + 2 * i, "%2hhx", &code[i]);
        code[n] = 0xC3; /* ret */
        buf[0] = v;
        in.rax = a, in.rcx = c, in.rdx = d, in.rbx = (uint64_t)buf, in.code = code;
        struct perf_event_attr at;
        memset(&at, 0, sizeof at);
        at.type = PERF_TYPE_BREAKPOINT;
        at.size = sizeof at;
        at.bp_type = HW_BREAKPOINT_W;
        at.bp_addr = (uint64_t)buf;
        at.bp_len = HW_BREAKPOINT_LEN_8;
        at.disabled = 1;
        at.exclude_kernel = 1;
        at.exclude_hv = 1;
        int fd = syscall(SYS_perf_event_open, &at, 0, -1, -1, 0);
        if (fd < 0) {
            printf("unavailable\n");
            return 0;
        }
        ioctl(fd, PERF_EVENT_IOC_RESET, 0);
        ioctl(fd, PERF_EVENT_IOC_ENABLE, 0);
        __asm__ volatile("push %%rbx\n mov 0(%%rsi), %%rax\n mov 8(%%rsi), %%rcx\n mov 16(%%rsi), %%rdx\n"
                         " mov 24(%%rsi), %%rbx\n call *32(%%rsi)\n pop %%rbx"
                         : : "S"(&in) : "rax", "rcx", "rdx", "memory", "cc");
        ioctl(fd, PERF_EVENT_IOC_DISABLE, 0);
        uint64_t count = 0;
        if (read(fd, &count, sizeof count) != sizeof count)
            count = ~0ull;
        close(fd);
        printf("%llu %llx\n", (unsigned long long)count, (unsigned long long)buf[0]);
        fflush(stdout);
    }
    return 0;
}
"""

# (what, code with [rbx] as operand, rax, rcx, rdx): instructions that may or may not write their
# operand when the value does not change; the host's watchpoint counts the writes it performs.
WRITE_BACKS = [
    ("shl dword [rbx],cl=0", "d323", 0, 0, 0),
    ("shl dword [rbx],cl=32 (masked to 0)", "d323", 0, 32, 0),
    ("shl qword [rbx],imm 0", "48c12300", 0, 0, 0),
    ("shr byte [rbx],cl=0", "d22b", 0, 0, 0),
    ("sar word [rbx],cl=0", "66d33b", 0, 0, 0),
    ("rol dword [rbx],cl=0", "d303", 0, 0, 0),
    ("rol byte [rbx],cl=8 (rotates by 0)", "d203", 0, 8, 0),
    ("ror qword [rbx],cl=64 (masked to 0)", "48d30b", 0, 64, 0),
    ("rcl byte [rbx],cl=9 (a full turn)", "d213", 0, 9, 0),
    ("rcr word [rbx],cl=17 (a full turn)", "66d31b", 0, 17, 0),
    ("shld dword [rbx],edx,cl=0", "0fa513", 0, 0, 5),
    ("shrd qword [rbx],rdx,0", "480fac1300", 0, 0, 5),
    ("cmpxchg [rbx],edx with a failing compare", "0fb113", 0, 0, 5),
    ("cmpxchg [rbx],edx with a succeeding compare", "0fb113", 0x11223344, 0, 5),
    ("cmpxchg8b [rbx] with a failing compare", "0fc70b", 0, 0, 0),
    ("xadd [rbx],edx adding 0", "0fc113", 0, 0, 0),
    ("cmovne eax,[rbx] with a false condition (reads only)", "0f4503", 0, 0, 0),
    ("bt dword [rbx],0 (reads only)", "0fba2300", 0, 0, 0),
    ("mov [rbx],eax (the control: one write)", "8903", 0, 0, 0),
]
WATCHED_VALUE = 0x11223344


@pytest.fixture(scope="module")
def watcher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if unavailable_reason() is not None:
        pytest.skip(str(unavailable_reason()))
    cc = shutil.which("gcc") or shutil.which("cc")
    assert cc is not None
    d = tmp_path_factory.mktemp("watch")
    (d / "watch.c").write_text(WATCH_C)
    exe = d / "watch"
    subprocess.run([cc, "-O1", "-mno-red-zone", "-o", str(exe), str(d / "watch.c")], check=True)
    return exe


def test_host_writes_back_what_vmmio_writes_back(watcher: Path) -> None:
    """A read-modify-write that changes nothing still writes on the CPU (a zero shift count, a full RCL
    turn, a failing CMPXCHG): the host's write watchpoint fires once, and vmmio's device sees one write
    of the unchanged value. Read-only forms (CMOVcc, BT) write nothing on either."""
    lines = "".join(f"{code} {a:x} {c:x} {d:x} {WATCHED_VALUE:x}\n" for _, code, a, c, d in WRITE_BACKS)
    out = subprocess.run([str(watcher)], input=lines, capture_output=True, text=True, timeout=30).stdout
    if out.startswith("unavailable"):
        pytest.skip("perf_event_open refuses hardware breakpoints here (perf_event_paranoid or a VM)")
    host = [
        tuple(int(x, 16) if k else int(x) for k, x in enumerate(line.split())) for line in out.splitlines()
    ]
    assert len(host) == len(WRITE_BACKS), out
    for (what, code, a, c, d), (writes, value) in zip(WRITE_BACKS, host, strict=True):
        row = Row(what, code, [], gprs={RAX: a, RCX: c, RDX: d})
        guest = _guest(row)
        guest.device.load(0, WATCHED_VALUE.to_bytes(8, "little"))
        guest.fault(MMIO)
        guest.run_to_halt()
        written = [(size, data) for _, size, w, data in guest.device.trace if w]
        assert len(written) == writes, f"{what}: the host wrote {writes} times, vmmio {written}"
        if value == WATCHED_VALUE:  # the host's write (if any) left the value: so must vmmio's
            assert all(data == WATCHED_VALUE & MASK[size] for size, data in written), what
