"""Every vector move form, driven through the Vcpu on the scripted backend.

Each row gives the instruction (encoded by GNU as), the vector/GPR state before, the exact device-visible
request sequence (offset from the device base, size, write?, data), the vector registers and GPRs that
change, and the exception injected, if any. Registers not named must not change; RIP advances by the
instruction length unless it faults.

The device byte at offset o holds o & 0xFF (`dev`). Before each row ZMMn holds the bytes
(0x40n + j) ^ 0x11(n >> 2) (`z`), k0-7 are 0, mmN is eight bytes 0xA0 + N with bits 79:64 = 0x4000 + N,
the x87 TOP is 5 with tags 0x0F, MXCSR 0x1F80. The CPU runs 64-bit code at CPL 0 (CPL 3 with CR0.AM
where a row says `user`) with SSE, CR4.OSXSAVE and XCR0 = x87|SSE|AVX|opmask|ZMM_Hi256|Hi16_ZMM. The
window is mapped with 4 KiB pages: MMIO..MMIO+0x2000 the device, MMIO+0x2000 not present,
MMIO+0x3000 read-only RAM, MMIO+0x4000 the device's first page read-only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from harness import DATA, MMIO, PT_POOL, Guest
from oracles.gen_vector import table_key, table_keys

from vmmio.abi import HltExit, InoutExit, MmioExit
from vmmio.x86.cpuid import ALL_FEATURES
from vmmio.x86.decode import decode
from vmmio.x86.insn import Insn
from vmmio.x86.pagetables import PAGE_1G, PAGE_4K, RW, US, P, PageTables
from vmmio.x86.regs import MASK
from vmmio.x86.state import (
    CR0_AM,
    CR0_EM,
    CR0_SSE,
    CR0_TS,
    CR4_OSFXSR,
    CR4_OSXSAVE,
    CR4_SSE,
    Control,
    VectorState,
)

RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI = range(8)
W, R = True, False
GP, SS, UD, NM, PF, MF, AC = 13, 12, 6, 7, 14, 16, 17
XCR0_ALL = 0xE7
TOP = 5 << 11
FTW = 0x0F


def ones(n: int) -> int:
    return (1 << (8 * n)) - 1


def dev(off: int, n: int) -> int:
    """`n` device bytes from `off` as the device holds them (byte o is o & 0xFF)."""
    return int.from_bytes(bytes((off + i) & 0xFF for i in range(n)), "little")


def z(n: int, size: int = 64, at: int = 0) -> int:
    """`size` bytes at byte `at` of ZMMn before the row."""
    full = bytes(((0x40 * n + j) ^ (0x11 * (n >> 2))) & 0xFF for j in range(64))
    return int.from_bytes(full[at : at + size], "little")


def put(old: int, at: int, value: int, size: int) -> int:
    """`old` with `size` bytes at byte `at` replaced by `value`."""
    m = ones(size) << (8 * at)
    return (old & ~m) | (value << (8 * at) & m)


def merge(n: int, value: int, size: int = 16) -> int:
    """A legacy SSE write of the low `size` bytes of ZMMn: the rest keeps its bytes."""
    return put(z(n), 0, value, size)


def rep(value: int, size: int, count: int) -> int:
    return sum(value << (8 * size * i) for i in range(count))


def mm(n: int) -> int:
    return int.from_bytes(bytes([0xA0 + n]) * 8, "little")


def Rd(off: int, size: int, data: int | None = None) -> tuple[int, int, bool, int]:
    return (off, size, R, dev(off, size) if data is None else data)


def Wr(off: int, size: int, data: int) -> tuple[int, int, bool, int]:
    return (off, size, W, data & ones(size))


def reads(off: int, size: int) -> list[tuple[int, int, bool, int]]:
    """An aligned access of `size` bytes at `off` as 8-byte reads."""
    return [Rd(off + i, min(8, size - i)) for i in range(0, size, 8)]


def writes(off: int, value: int, size: int) -> list[tuple[int, int, bool, int]]:
    return [Wr(off + i, min(8, size - i), value >> (8 * i)) for i in range(0, size, 8)]


# What every MMX instruction does to the x87 state it aliases: TOP = 0, all tags valid.
MMX_DONE = {"fsw": 0, "ftw": 0xFF}


def mmx_write(n: int, value: int) -> dict[str, int]:
    return {f"mm{n}": value, f"mm_hi{n}": 0xFFFF, **MMX_DONE}


@dataclass
class VRow:
    name: str
    code: str
    trace: list[tuple[int, int, bool, int]]
    after: dict[str, int] = field(default_factory=dict)  # vector fields that change: zmmN kN mmN mm_hiN ...
    before: dict[str, int] = field(default_factory=dict)  # vector fields set before, on top of the base
    gprs: dict[int, int] = field(default_factory=dict)  # on top of RBX = MMIO
    regs: dict[int, int] = field(default_factory=dict)  # GPRs that change
    fault: tuple[int, int | None, int | None] | None = None  # (vector, error code, CR2) injected
    at: int = -1  # the faulting GPA's offset from MMIO (default: the first request's, else 0)
    ctl: Callable[[Control], None] | None = None
    hide: tuple[str, ...] = ()  # CPUID features the guest does not have
    user: bool = False  # CPL 3 with CR0.AM
    rflags: int = 0
    device: dict[int, bytes] = field(default_factory=dict)  # device bytes patched before


def cr0(bits: int) -> Callable[[Control], None]:
    def f(c: Control) -> None:
        c.cr0 |= bits

    return f


def no_cr4(bits: int) -> Callable[[Control], None]:
    def f(c: Control) -> None:
        c.cr4 &= ~bits

    return f


def xcr0(value: int) -> Callable[[Control], None]:
    def f(c: Control) -> None:
        c.xcr0 = value

    return f


def em_without_osfxsr(c: Control) -> None:
    c.cr0 |= CR0_EM
    c.cr4 &= ~CR4_OSFXSR


def base_vector() -> VectorState:
    vec = VectorState()
    vec.zmm = [z(n) for n in range(32)]
    vec.mm = [mm(n) for n in range(8)]
    vec.mm_hi = [0x4000 + n for n in range(8)]
    vec.fsw, vec.ftw = TOP, FTW
    return vec


def apply(vec: VectorState, changes: dict[str, int]) -> None:
    for key, value in changes.items():
        name = key.rstrip("0123456789")
        if name in ("mxcsr", "fsw", "ftw"):
            setattr(vec, name, value)
        else:
            getattr(vec, name)[int(key[len(name) :])] = value


def vector_guest(row: VRow) -> Guest:
    gprs = {RBX: MMIO, **row.gprs}
    g = Guest(bytes.fromhex(row.code), gprs, rflags=0x2 | row.rflags)
    pt = PageTables(PT_POOL)
    pt.map(0, 0, PAGE_1G, P | RW | US)
    for page in (0, 0x1000):
        pt.map(MMIO + page, MMIO + page, PAGE_4K, P | RW | US)
    pt.map(MMIO + 0x3000, DATA + 0x3000, PAGE_4K, P | US)
    pt.map(MMIO + 0x4000, MMIO, PAGE_4K, P | US)
    for n in (2, 3):
        pt.map(n * PAGE_1G, n * PAGE_1G, PAGE_1G, P | RW | US)
    g.vm.memory.write(PT_POOL, bytes(pt.end - PT_POOL))
    g.pt = pt
    g.write_tables()
    ctl = g.backend.control
    ctl.cr3 = pt.root
    ctl.cr0 |= CR0_SSE
    ctl.cr4 |= CR4_SSE | CR4_OSXSAVE
    ctl.xcr0 = XCR0_ALL
    if row.user:
        ctl.cpl = 3
        ctl.cr0 |= CR0_AM
    if row.ctl is not None:
        row.ctl(ctl)
    if row.hide:
        g.backend._cpuid = ALL_FEATURES.without(*row.hide)
    vec = base_vector()
    apply(vec, row.before)
    g.backend.vector = vec
    g.device.load(0, bytes(n & 0xFF for n in range(0x2000)))
    for off, data in row.device.items():
        g.device.load(off, data)
    return g


def run_row(row: VRow) -> None:
    g = vector_guest(row)
    at = row.at if row.at >= 0 else (row.trace[0][0] if row.trace else 0)
    g.fault(MMIO + at)
    before = g.regs.copy()
    exits = g.run_to_halt()
    assert isinstance(exits[-1], HltExit), exits[-1]
    assert [e for e in exits if isinstance(e, InoutExit)] == []
    assert len([e for e in exits if isinstance(e, MmioExit)]) == len(row.trace)
    got = [(gpa - MMIO, size, write, data) for gpa, size, write, data in g.device.trace]
    assert [(hex(o), n, w, hex(d)) for o, n, w, d in got] == [
        (hex(o), n, w, hex(d)) for o, n, w, d in row.trace
    ]
    assert g.backend.injected == ([row.fault] if row.fault else [])
    want = list(before.gprs)
    for n, v in row.regs.items():
        want[n] = v
    assert [hex(v) for v in g.regs.gprs] == [hex(v) for v in want]
    assert g.regs.rip == before.rip + (0 if row.fault else len(bytes.fromhex(row.code)))
    expected = base_vector()
    apply(expected, row.before)
    apply(expected, row.after)
    assert repr(g.backend.vector) == repr(expected)


def ids(rows: list[VRow]) -> list[str]:
    return [r.name for r in rows]


LEGACY = [
    VRow("movups xmm1,[rbx+0x10]", "0f104b10", reads(0x10, 16), {"zmm1": merge(1, dev(0x10, 16))}),
    VRow("movups [rbx+0x10],xmm1", "0f114b10", writes(0x10, z(1, 16), 16)),
    VRow("movupd [rbx+0x10],xmm1", "660f114b10", writes(0x10, z(1, 16), 16)),
    VRow(
        "movupd xmm1,[rbx+3]: misaligned, cut into 1/4/8/2/1",
        "660f104b03",
        [Rd(3, 1), Rd(4, 4), Rd(8, 8), Rd(0x10, 2), Rd(0x12, 1)],
        {"zmm1": merge(1, dev(3, 16))},
    ),
    VRow("movss xmm1,[rbx+4]: bits 127:32 zeroed", "f30f104b04", [Rd(4, 4)], {"zmm1": merge(1, dev(4, 4))}),
    VRow("movss xmm1,xmm2: the low dword only", "f30f10ca", [], {"zmm1": put(z(1), 0, z(2, 4), 4)}),
    VRow("movss [rbx+4],xmm1", "f30f114b04", [Wr(4, 4, z(1, 4))]),
    VRow("movsd xmm1,[rbx+8]", "f20f104b08", [Rd(8, 8)], {"zmm1": merge(1, dev(8, 8))}),
    VRow("movsd [rbx+8],xmm1", "f20f114b08", [Wr(8, 8, z(1, 8))]),
    VRow("movsd xmm1,xmm2", "f20f10ca", [], {"zmm1": put(z(1), 0, z(2, 8), 8)}),
    VRow("movlps xmm1,[rbx]", "0f120b", [Rd(0, 8)], {"zmm1": put(z(1), 0, dev(0, 8), 8)}),
    VRow("movlps [rbx],xmm1", "0f130b", [Wr(0, 8, z(1, 8))]),
    VRow("movlpd xmm1,[rbx]", "660f120b", [Rd(0, 8)], {"zmm1": put(z(1), 0, dev(0, 8), 8)}),
    VRow("movlpd [rbx],xmm1", "660f130b", [Wr(0, 8, z(1, 8))]),
    VRow("movhps xmm1,[rbx]", "0f160b", [Rd(0, 8)], {"zmm1": put(z(1), 8, dev(0, 8), 8)}),
    VRow("movhps [rbx],xmm1", "0f170b", [Wr(0, 8, z(1, 8, 8))]),
    VRow("movhpd xmm1,[rbx]", "660f160b", [Rd(0, 8)], {"zmm1": put(z(1), 8, dev(0, 8), 8)}),
    VRow("movhpd [rbx],xmm1", "660f170b", [Wr(0, 8, z(1, 8, 8))]),
    VRow("movhlps xmm1,xmm2", "0f12ca", [], {"zmm1": put(z(1), 0, z(2, 8, 8), 8)}),
    VRow("movlhps xmm1,xmm2", "0f16ca", [], {"zmm1": put(z(1), 8, z(2, 8), 8)}),
    VRow(
        "movsldup xmm1,[rbx+0x10]",
        "f30f124b10",
        reads(0x10, 16),
        {"zmm1": merge(1, 0x1B1A1918_1B1A1918_13121110_13121110)},
    ),
    VRow(
        "movshdup xmm1,[rbx+0x10]",
        "f30f164b10",
        reads(0x10, 16),
        {"zmm1": merge(1, 0x1F1E1D1C_1F1E1D1C_17161514_17161514)},
    ),
    VRow("movshdup xmm1,[rbx+8]: m128 needs 16-byte alignment", "f30f164b08", [], fault=(GP, 0, None), at=8),
    VRow(
        "movddup xmm1,[rbx+4]: a qword read",
        "f20f124b04",
        [Rd(4, 8)],
        {"zmm1": merge(1, 0x0B0A0908_07060504_0B0A0908_07060504)},
    ),
    VRow("movaps xmm9,[rbx+0x20]", "440f284b20", reads(0x20, 16), {"zmm9": merge(9, dev(0x20, 16))}),
    VRow("movaps [rbx+0x20],xmm9", "440f294b20", writes(0x20, z(9, 16), 16)),
    VRow("movapd xmm1,[rbx+0x20]", "660f284b20", reads(0x20, 16), {"zmm1": merge(1, dev(0x20, 16))}),
    VRow("movapd [rbx+0x20],xmm1", "660f294b20", writes(0x20, z(1, 16), 16)),
    VRow("movaps xmm1,[rbx+8]: #GP(0), no request", "0f284b08", [], fault=(GP, 0, None), at=8),
    VRow("movntps [rbx+0x20],xmm1", "0f2b4b20", writes(0x20, z(1, 16), 16)),
    VRow("movntpd [rbx+0x20],xmm1", "660f2b4b20", writes(0x20, z(1, 16), 16)),
    VRow("movntps [rbx+0x28],xmm1: #GP(0)", "0f2b4b28", [], fault=(GP, 0, None), at=0x28),
    VRow("movd xmm1,[rbx+4]", "660f6e4b04", [Rd(4, 4)], {"zmm1": merge(1, dev(4, 4))}),
    VRow("movq xmm1,[rbx+8] (66 REX.W 0F 6E)", "66480f6e4b08", [Rd(8, 8)], {"zmm1": merge(1, dev(8, 8))}),
    VRow("movd xmm1,eax", "660f6ec8", [], {"zmm1": merge(1, 0x55667788)}, gprs={RAX: 0x11223344_55667788}),
    VRow(
        "movq xmm1,rax",
        "66480f6ec8",
        [],
        {"zmm1": merge(1, 0x11223344_55667788)},
        gprs={RAX: 0x11223344_55667788},
    ),
    VRow("movd [rbx+4],xmm1", "660f7e4b04", [Wr(4, 4, z(1, 4))]),
    VRow("movq [rbx+8],xmm1 (66 REX.W 0F 7E)", "66480f7e4b08", [Wr(8, 8, z(1, 8))]),
    VRow("movd eax,xmm1 zero-extends", "660f7ec8", [], regs={RAX: z(1, 4)}, gprs={RAX: MASK[8]}),
    VRow("movq rax,xmm1", "66480f7ec8", [], regs={RAX: z(1, 8)}),
    VRow("movq xmm1,[rbx+8] (F3 0F 7E)", "f30f7e4b08", [Rd(8, 8)], {"zmm1": merge(1, dev(8, 8))}),
    VRow("movq xmm1,xmm2 (F3 0F 7E) zero-extends", "f30f7eca", [], {"zmm1": merge(1, z(2, 8))}),
    VRow("movdqa xmm1,[rbx+0x30]", "660f6f4b30", reads(0x30, 16), {"zmm1": merge(1, dev(0x30, 16))}),
    VRow("movdqa [rbx+0x30],xmm1", "660f7f4b30", writes(0x30, z(1, 16), 16)),
    VRow(
        "movdqu xmm1,[rbx+0xff8]: one request per page",
        "f30f6f8bf80f0000",
        [Rd(0xFF8, 8), Rd(0x1000, 8)],
        {"zmm1": merge(1, dev(0xFF8, 16))},
    ),
    VRow("movdqu [rbx+0xff8],xmm1", "f30f7f8bf80f0000", [Wr(0xFF8, 8, z(1, 8)), Wr(0x1000, 8, z(1, 8, 8))]),
    VRow("movq [rbx+8],xmm1 (66 0F D6)", "660fd64b08", [Wr(8, 8, z(1, 8))]),
    VRow("movq xmm2,xmm1 (66 0F D6) zero-extends", "660fd6ca", [], {"zmm2": merge(2, z(1, 8))}),
    VRow("movntdq [rbx+0x30],xmm1", "660fe74b30", writes(0x30, z(1, 16), 16)),
    VRow(
        "lddqu xmm1,[rbx+5]",
        "f20ff04b05",
        [Rd(5, 1), Rd(6, 2), Rd(8, 8), Rd(0x10, 4), Rd(0x14, 1)],
        {"zmm1": merge(1, dev(5, 16))},
    ),
    VRow("pinsrw xmm1,[rbx+2],5", "660fc44b0205", [Rd(2, 2)], {"zmm1": put(z(1), 10, dev(2, 2), 2)}),
    VRow(
        "pinsrw xmm1,eax,3",
        "660fc4c803",
        [],
        {"zmm1": put(z(1), 6, 0x7788, 2)},
        gprs={RAX: 0x11223344_55667788},
    ),
    VRow("movntdqa xmm1,[rbx+0x10]", "660f382a4b10", reads(0x10, 16), {"zmm1": merge(1, dev(0x10, 16))}),
    VRow("pextrb [rbx+1],xmm1,3", "660f3a144b0103", [Wr(1, 1, z(1, 1, 3))]),
    VRow("pextrb eax,xmm1,17: index mod 16, zero-extended", "660f3a14c811", [], regs={RAX: z(1, 1, 1)}),
    VRow("pextrw [rbx+2],xmm1,7", "660f3a154b0207", [Wr(2, 2, z(1, 2, 14))]),
    VRow("pextrd [rbx+4],xmm1,2", "660f3a164b0402", [Wr(4, 4, z(1, 4, 8))]),
    VRow("pextrq [rbx+8],xmm1,1", "66480f3a164b0801", [Wr(8, 8, z(1, 8, 8))]),
    VRow("extractps [rbx+4],xmm1,3", "660f3a174b0403", [Wr(4, 4, z(1, 4, 12))]),
    VRow("pinsrb xmm1,[rbx+1],15", "660f3a204b010f", [Rd(1, 1)], {"zmm1": put(z(1), 15, 1, 1)}),
    VRow("pinsrd xmm1,[rbx+4],1", "660f3a224b0401", [Rd(4, 4)], {"zmm1": put(z(1), 4, dev(4, 4), 4)}),
    VRow("pinsrq xmm1,[rbx+8],1", "66480f3a224b0801", [Rd(8, 8)], {"zmm1": put(z(1), 8, dev(8, 8), 8)}),
    VRow(
        "maskmovdqu xmm1,xmm2: bytes 0-2, 5, 8-15 to DS:rdi",
        "660ff7ca",
        [Wr(0x40, 2, z(1, 2)), Wr(0x42, 1, z(1, 1, 2)), Wr(0x45, 1, z(1, 1, 5)), Wr(0x48, 8, z(1, 8, 8))],
        before={"zmm2": 0x80808080_80808080_00008000_00808080},
        gprs={RDI: MMIO + 0x40},
    ),
    VRow(
        "maskmovdqu xmm1,xmm2 with FS and 32-bit rdi",
        "646766" + "0ff7ca",
        [Wr(0x40, 1, z(1, 1))],
        before={"zmm2": 0x80},
        gprs={RDI: 0xFFFF_FFFF_0000_0040},
        ctl=lambda c: setattr(c.segs[4], "base", MMIO),
    ),
    VRow(
        "ldmxcsr [rbx]",
        "0fae13",
        [Rd(0, 4, 0x1F81)],
        {"mxcsr": 0x1F81},
        device={0: (0x1F81).to_bytes(4, "little")},
    ),
    VRow(
        "ldmxcsr [rbx]: a reserved bit is #GP(0) after the read",
        "0fae13",
        [Rd(0, 4, 0x11F80)],
        fault=(GP, 0, None),
        device={0: (0x11F80).to_bytes(4, "little")},
    ),
    VRow("stmxcsr [rbx+4]", "0fae5b04", [Wr(4, 4, 0x1F83)], before={"mxcsr": 0x1F83}),
]

MMX = [
    VRow("movd mm1,[rbx+4]", "0f6e4b04", [Rd(4, 4)], mmx_write(1, dev(4, 4))),
    VRow("movq mm1,[rbx+8] (REX.W 0F 6E)", "480f6e4b08", [Rd(8, 8)], mmx_write(1, dev(8, 8))),
    VRow("movd mm1,eax", "0f6ec8", [], mmx_write(1, 0x55667788), gprs={RAX: 0x11223344_55667788}),
    VRow("movd [rbx+4],mm1", "0f7e4b04", [Wr(4, 4, mm(1))], MMX_DONE),
    VRow("movq [rbx+8],mm1 (REX.W 0F 7E)", "480f7e4b08", [Wr(8, 8, mm(1))], MMX_DONE),
    VRow("movd eax,mm1", "0f7ec8", [], MMX_DONE, regs={RAX: mm(1) & 0xFFFF_FFFF}),
    VRow("movq mm1,[rbx+8]", "0f6f4b08", [Rd(8, 8)], mmx_write(1, dev(8, 8))),
    VRow("movq [rbx+8],mm1", "0f7f4b08", [Wr(8, 8, mm(1))], MMX_DONE),
    VRow("movq mm1,mm2", "0f6fca", [], mmx_write(1, mm(2))),
    VRow("movntq [rbx+8],mm1", "0fe74b08", [Wr(8, 8, mm(1))], MMX_DONE),
    VRow("pinsrw mm1,[rbx+2],2", "0fc44b0202", [Rd(2, 2)], mmx_write(1, put(mm(1), 4, dev(2, 2), 2))),
    VRow(
        "maskmovq mm1,mm2: bytes 0, 4-5, 7",
        "0ff7ca",
        [Wr(0x80, 1, mm(1)), Wr(0x84, 2, mm(1)), Wr(0x87, 1, mm(1))],
        MMX_DONE,
        before={"mm2": 0x80008080_00000080},
        gprs={RDI: MMIO + 0x80},
    ),
    VRow("movq2dq xmm1,mm2", "f30fd6ca", [], {"zmm1": merge(1, mm(2)), **MMX_DONE}),
    VRow("movdq2q mm1,xmm2", "f20fd6ca", [], mmx_write(1, z(2, 8))),
    VRow(
        "movq mm1,[rbx+8] without CR4.OSFXSR: MMX does not need it",
        "0f6f4b08",
        [Rd(8, 8)],
        mmx_write(1, dev(8, 8)),
        ctl=no_cr4(CR4_OSFXSR),
    ),
]

VEX = [
    VRow(
        "vmovups xmm1,[rbx+0x10]: bits 511:128 zeroed", "c5f8104b10", reads(0x10, 16), {"zmm1": dev(0x10, 16)}
    ),
    VRow("vmovups ymm1,[rbx+0x10]", "c5fc104b10", reads(0x10, 32), {"zmm1": dev(0x10, 32)}),
    VRow("vmovupd [rbx+0x10],ymm1", "c5fd114b10", writes(0x10, z(1, 32), 32)),
    VRow("vmovupd ymm1,[rbx+0x10]", "c5fd104b10", reads(0x10, 32), {"zmm1": dev(0x10, 32)}),
    VRow("vmovups [rbx+0x10],ymm1", "c5fc114b10", writes(0x10, z(1, 32), 32)),
    VRow("vmovapd xmm1,[rbx+0x20]", "c5f9284b20", reads(0x20, 16), {"zmm1": dev(0x20, 16)}),
    VRow("vmovupd [rbx+0x10],xmm1", "c5f9114b10", writes(0x10, z(1, 16), 16)),
    VRow("vmovaps ymm1,[rbx+0x20]", "c5fc284b20", reads(0x20, 32), {"zmm1": dev(0x20, 32)}),
    VRow(
        "vmovaps ymm1,[rbx+0x10]: #GP(0), 32-byte alignment", "c5fc284b10", [], fault=(GP, 0, None), at=0x10
    ),
    VRow("vmovapd [rbx+0x20],xmm1", "c5f9294b20", writes(0x20, z(1, 16), 16)),
    VRow("vmovaps [rbx+0x20],ymm1", "c5fc294b20", writes(0x20, z(1, 32), 32)),
    VRow("vmovntps [rbx+0x20],ymm1", "c5fc2b4b20", writes(0x20, z(1, 32), 32)),
    VRow("vmovntpd [rbx+0x20],xmm1", "c5f92b4b20", writes(0x20, z(1, 16), 16)),
    VRow("vmovdqa xmm1,[rbx+0x30]", "c5f96f4b30", reads(0x30, 16), {"zmm1": dev(0x30, 16)}),
    VRow("vmovdqa [rbx+0x40],ymm1", "c5fd7f4b40", writes(0x40, z(1, 32), 32)),
    VRow(
        "vmovdqu ymm1,[rbx+5]",
        "c5fe6f4b05",
        [Rd(5, 1), Rd(6, 2), Rd(8, 8), Rd(0x10, 8), Rd(0x18, 8), Rd(0x20, 4), Rd(0x24, 1)],
        {"zmm1": dev(5, 32)},
    ),
    VRow(
        "vmovdqu [rbx+5],xmm1",
        "c5fa7f4b05",
        [
            Wr(5, 1, z(1, 1)),
            Wr(6, 2, z(1, 2, 1)),
            Wr(8, 8, z(1, 8, 3)),
            Wr(0x10, 4, z(1, 4, 11)),
            Wr(0x14, 1, z(1, 1, 15)),
        ],
    ),
    VRow("vmovntdq [rbx+0x40],ymm1", "c5fde74b40", writes(0x40, z(1, 32), 32)),
    VRow(
        "vlddqu ymm1,[rbx+3]",
        "c5fff04b03",
        [Rd(3, 1), Rd(4, 4), Rd(8, 8), Rd(0x10, 8), Rd(0x18, 8), Rd(0x20, 2), Rd(0x22, 1)],
        {"zmm1": dev(3, 32)},
    ),
    VRow("vmovss xmm1,[rbx+4]", "c5fa104b04", [Rd(4, 4)], {"zmm1": dev(4, 4)}),
    VRow("vmovss [rbx+4],xmm1", "c5fa114b04", [Wr(4, 4, z(1, 4))]),
    VRow("vmovss xmm1,xmm2,xmm3", "c5ea10cb", [], {"zmm1": put(z(2, 16), 0, z(3, 4), 4)}),
    VRow("vmovsd xmm1,[rbx+8]", "c5fb104b08", [Rd(8, 8)], {"zmm1": dev(8, 8)}),
    VRow("vmovsd [rbx+8],xmm1", "c5fb114b08", [Wr(8, 8, z(1, 8))]),
    VRow("vmovsd xmm1,xmm2,xmm3", "c5eb10cb", [], {"zmm1": put(z(2, 16), 0, z(3, 8), 8)}),
    VRow("vmovss xmm1,[rbx+4] with vvvv != 1111b: #UD", "c5f2104b04", [], fault=(UD, None, None)),
    VRow("vmovlps xmm1,xmm2,[rbx]", "c5e8120b", [Rd(0, 8)], {"zmm1": put(z(2, 16), 0, dev(0, 8), 8)}),
    VRow("vmovlps [rbx],xmm1", "c5f8130b", [Wr(0, 8, z(1, 8))]),
    VRow("vmovlpd xmm1,xmm2,[rbx]", "c5e9120b", [Rd(0, 8)], {"zmm1": put(z(2, 16), 0, dev(0, 8), 8)}),
    VRow("vmovlpd [rbx],xmm1", "c5f9130b", [Wr(0, 8, z(1, 8))]),
    VRow("vmovhps xmm1,xmm2,[rbx]", "c5e8160b", [Rd(0, 8)], {"zmm1": put(z(2, 16), 8, dev(0, 8), 8)}),
    VRow("vmovhps [rbx],xmm1", "c5f8170b", [Wr(0, 8, z(1, 8, 8))]),
    VRow("vmovhpd xmm1,xmm2,[rbx]", "c5e9160b", [Rd(0, 8)], {"zmm1": put(z(2, 16), 8, dev(0, 8), 8)}),
    VRow("vmovhpd [rbx],xmm1", "c5f9170b", [Wr(0, 8, z(1, 8, 8))]),
    VRow("vmovhlps xmm1,xmm2,xmm3", "c5e812cb", [], {"zmm1": put(z(2, 16), 0, z(3, 8, 8), 8)}),
    VRow("vmovlhps xmm1,xmm2,xmm3", "c5e816cb", [], {"zmm1": put(z(2, 16), 8, z(3, 8), 8)}),
    VRow("vmovlps xmm1,xmm2,[rbx] with VEX.L=1: #UD", "c5ec120b", [], fault=(UD, None, None)),
    VRow(
        "vmovsldup ymm1,[rbx+0x10]",
        "c5fe124b10",
        reads(0x10, 32),
        {"zmm1": 0x2B2A2928_2B2A2928_23222120_23222120_1B1A1918_1B1A1918_13121110_13121110},
    ),
    VRow(
        "vmovshdup xmm1,[rbx+0x10]: no alignment needed",
        "c5fa164b10",
        reads(0x10, 16),
        {"zmm1": 0x1F1E1D1C_1F1E1D1C_17161514_17161514},
    ),
    VRow("vmovddup xmm1,[rbx+8]", "c5fb124b08", [Rd(8, 8)], {"zmm1": rep(dev(8, 8), 8, 2)}),
    VRow(
        "vmovddup ymm1,[rbx+8]: qwords 0 and 2, each twice",
        "c5ff124b08",
        reads(8, 32),
        {"zmm1": rep(dev(8, 8), 8, 2) | rep(dev(0x18, 8), 8, 2) << 128},
    ),
    VRow("vmovd xmm1,[rbx+4]", "c5f96e4b04", [Rd(4, 4)], {"zmm1": dev(4, 4)}),
    VRow("vmovd xmm1,eax", "c5f96ec8", [], {"zmm1": 0x55667788}, gprs={RAX: 0x11223344_55667788}),
    VRow("vmovd [rbx+4],xmm1", "c5f97e4b04", [Wr(4, 4, z(1, 4))]),
    VRow("vmovd eax,xmm1", "c5f97ec8", [], regs={RAX: z(1, 4)}),
    VRow("vmovd xmm1,[rbx+4] with VEX.L=1: #UD", "c5fd6e4b04", [], fault=(UD, None, None)),
    VRow("vmovq xmm1,[rbx+8] (F3 0F 7E)", "c5fa7e4b08", [Rd(8, 8)], {"zmm1": dev(8, 8)}),
    VRow("vmovq [rbx+8],xmm1 (66 0F D6)", "c5f9d64b08", [Wr(8, 8, z(1, 8))]),
    VRow("vmovq rax,xmm1", "c4e1f97ec8", [], regs={RAX: z(1, 8)}),
    VRow("vmovq xmm1,rax", "c4e1f96ec8", [], {"zmm1": 0x11223344_55667788}, gprs={RAX: 0x11223344_55667788}),
    VRow("vpinsrw xmm1,xmm2,[rbx+2],1", "c5e9c44b0201", [Rd(2, 2)], {"zmm1": put(z(2, 16), 2, dev(2, 2), 2)}),
    VRow(
        "vmaskmovdqu xmm1,xmm2",
        "c5f9f7ca",
        [Wr(0x4F, 1, z(1, 1, 15))],
        before={"zmm2": 0x80 << 120},
        gprs={RDI: MMIO + 0x40},
    ),
    VRow(
        "vldmxcsr [rbx]", "c5f8ae13", [Rd(0, 4, 0x9F80)], {"mxcsr": 0x9F80}, device={0: b"\x80\x9f\x00\x00"}
    ),
    VRow("vstmxcsr [rbx+4]", "c5f8ae5b04", [Wr(4, 4, 0x1F80)]),
    VRow("vbroadcastss xmm1,[rbx+4]", "c4e279184b04", [Rd(4, 4)], {"zmm1": rep(dev(4, 4), 4, 4)}),
    VRow("vbroadcastss ymm1,[rbx+4]", "c4e27d184b04", [Rd(4, 4)], {"zmm1": rep(dev(4, 4), 4, 8)}),
    VRow("vbroadcastss ymm1,xmm2 (AVX2)", "c4e27d18ca", [], {"zmm1": rep(z(2, 4), 4, 8)}),
    VRow(
        "vbroadcastss ymm1,xmm2 without AVX2: #UD", "c4e27d18ca", [], fault=(UD, None, None), hide=("avx2",)
    ),
    VRow("vbroadcastss with VEX.W1: #UD", "c4e2f9184b04", [], fault=(UD, None, None)),
    VRow("vbroadcastsd ymm1,[rbx+8]", "c4e27d194b08", [Rd(8, 8)], {"zmm1": rep(dev(8, 8), 8, 4)}),
    VRow("vbroadcastsd xmm (VEX.L=0): #UD", "c4e279194b08", [], fault=(UD, None, None)),
    VRow(
        "vbroadcastf128 ymm1,[rbx+0x10]", "c4e27d1a4b10", reads(0x10, 16), {"zmm1": rep(dev(0x10, 16), 16, 2)}
    ),
    VRow("vmovntdqa xmm1,[rbx+0x10]", "c4e2792a4b10", reads(0x10, 16), {"zmm1": dev(0x10, 16)}),
    VRow("vmovntdqa ymm1,[rbx+0x20] (AVX2)", "c4e27d2a4b20", reads(0x20, 32), {"zmm1": dev(0x20, 32)}),
    VRow(
        "vmovntdqa ymm1 without AVX2: #UD",
        "c4e27d2a4b20",
        [],
        fault=(UD, None, None),
        hide=("avx2",),
        at=0x20,
    ),
    VRow("vpbroadcastb xmm1,[rbx+1]", "c4e279784b01", [Rd(1, 1)], {"zmm1": rep(1, 1, 16)}),
    VRow("vpbroadcastw ymm1,[rbx+2]", "c4e27d794b02", [Rd(2, 2)], {"zmm1": rep(0x0302, 2, 16)}),
    VRow("vpbroadcastd xmm1,[rbx+4]", "c4e279584b04", [Rd(4, 4)], {"zmm1": rep(dev(4, 4), 4, 4)}),
    VRow("vpbroadcastq ymm1,[rbx+8]", "c4e27d594b08", [Rd(8, 8)], {"zmm1": rep(dev(8, 8), 8, 4)}),
    VRow(
        "vbroadcasti128 ymm1,[rbx+0x10]", "c4e27d5a4b10", reads(0x10, 16), {"zmm1": rep(dev(0x10, 16), 16, 2)}
    ),
    VRow("vpextrb [rbx+1],xmm1,3", "c4e379144b0103", [Wr(1, 1, z(1, 1, 3))]),
    VRow("vpextrw [rbx+2],xmm1,7", "c4e379154b0207", [Wr(2, 2, z(1, 2, 14))]),
    VRow("vpextrd [rbx+4],xmm1,2", "c4e379164b0402", [Wr(4, 4, z(1, 4, 8))]),
    VRow("vpextrq [rbx+8],xmm1,1", "c4e3f9164b0801", [Wr(8, 8, z(1, 8, 8))]),
    VRow("vextractps [rbx+4],xmm1,3", "c4e379174b0403", [Wr(4, 4, z(1, 4, 12))]),
    VRow("vpinsrb xmm1,xmm2,[rbx+1],15", "c4e369204b010f", [Rd(1, 1)], {"zmm1": put(z(2, 16), 15, 1, 1)}),
    VRow(
        "vpinsrd xmm1,xmm2,[rbx+4],1", "c4e369224b0401", [Rd(4, 4)], {"zmm1": put(z(2, 16), 4, dev(4, 4), 4)}
    ),
    VRow(
        "vpinsrq xmm1,xmm2,[rbx+8],1", "c4e3e9224b0801", [Rd(8, 8)], {"zmm1": put(z(2, 16), 8, dev(8, 8), 8)}
    ),
]

# Masks for VMASKMOV*/VPMASKMOV*: the sign bit of each element of the vvvv register selects it.
SEL_0_2 = 1 << 31 | 1 << 95  # dwords 0 and 2
SEL_3_6 = sum(1 << (32 * n + 31) for n in (3, 4, 5, 6))

MASKED_VEX = [
    VRow(
        "vmaskmovps xmm1,xmm2,[rbx]: dwords 0 and 2, the others zeroed",
        "c4e2692c0b",
        [Rd(0, 4), Rd(8, 4)],
        {"zmm1": dev(0, 4) | dev(8, 4) << 64},
        before={"zmm2": SEL_0_2},
    ),
    VRow(
        "vmaskmovps ymm1,ymm2,[rbx]: dwords 3-6, one run",
        "c4e26d2c0b",
        [Rd(12, 4), Rd(16, 8), Rd(24, 4)],
        {"zmm1": dev(12, 16) << 96},
        before={"zmm2": SEL_3_6},
    ),
    VRow(
        "vmaskmovpd xmm1,xmm2,[rbx]: nothing selected, no request, no fault (non-canonical)",
        "c4e2692d0b",
        [],
        {"zmm1": 0},
        before={"zmm2": 0},
        gprs={RBX: 0x8000_0000_0000_0000},
    ),
    VRow(
        "vmaskmovps [rbx],xmm2,xmm1: dwords 1-2, one 8-byte request at +4",
        "c4e2692e0b",
        [Wr(4, 8, z(1, 8, 4))],
        before={"zmm2": 1 << 63 | 1 << 95},
    ),
    VRow(
        "vmaskmovpd [rbx],ymm2,ymm1: qwords 0 and 3",
        "c4e26d2f0b",
        [Wr(0, 8, z(1, 8)), Wr(0x18, 8, z(1, 8, 24))],
        before={"zmm2": 1 << 63 | 1 << 255},
    ),
    VRow(
        "vpmaskmovd xmm1,xmm2,[rbx]: all selected, as an unmasked load",
        "c4e2698c0b",
        reads(0, 16),
        {"zmm1": dev(0, 16)},
        before={"zmm2": rep(1 << 31, 4, 4)},
    ),
    VRow(
        "vpmaskmovq ymm1,ymm2,[rbx]: qwords 1-2",
        "c4e2ed8c0b",
        [Rd(8, 8), Rd(16, 8)],
        {"zmm1": dev(8, 16) << 64},
        before={"zmm2": 1 << 127 | 1 << 191},
    ),
    VRow(
        "vpmaskmovd [rbx],ymm2,ymm1: dword 7",
        "c4e26d8e0b",
        [Wr(28, 4, z(1, 4, 28))],
        before={"zmm2": 1 << 255},
    ),
    VRow("vpmaskmovq [rbx],xmm2,xmm1: nothing selected", "c4e2e98e0b", [], before={"zmm2": 0}),
    VRow(
        "vmaskmovps xmm1,xmm2,[rbx+0x1ff8]: dwords 0-1, the unselected ones are past the page",
        "c4e2692c8bf81f0000",
        [Rd(0x1FF8, 8)],
        {"zmm1": dev(0x1FF8, 8)},
        before={"zmm2": 1 << 31 | 1 << 63},
    ),
    VRow(
        "vmaskmovps xmm1,xmm2,[rbx+0x1ff8]: all selected, #PF at the page",
        "c4e2692c8bf81f0000",
        [],
        fault=(PF, 0, MMIO + 0x2000),
        before={"zmm2": rep(1 << 31, 4, 4)},
        at=0x1FF8,
    ),
    VRow(
        "vmaskmovps [rbx+0x1ff8],xmm2,xmm1: a masked store faults at its last selected byte",
        "c4e2692e8bf81f0000",
        [],
        fault=(PF, 2, MMIO + 0x2007),
        before={"zmm2": rep(1 << 31, 4, 4)},
        at=0x1FF8,
    ),
    VRow(
        "vmaskmovps [rbx+0x1ff8],xmm2,xmm1: dword 2 alone faults at its first byte",
        "c4e2692e8bf81f0000",
        [],
        fault=(PF, 2, MMIO + 0x2000),
        before={"zmm2": 1 << 95},
        at=0x1FF8,
    ),
]

VEX_FAULTS = [
    VRow(
        "vmovups without CR4.OSXSAVE: #UD", "c5f8104b10", [], fault=(UD, None, None), ctl=no_cr4(CR4_OSXSAVE)
    ),
    VRow("vmovups with XCR0 = x87|SSE: #UD", "c5f8104b10", [], fault=(UD, None, None), ctl=xcr0(3)),
    VRow("vmovups without AVX: #UD", "c5f8104b10", [], fault=(UD, None, None), hide=("avx",)),
    VRow("vmovups with CR0.TS: #NM", "c5f8104b10", [], fault=(NM, None, None), ctl=cr0(CR0_TS)),
    VRow(
        "vmovups with CR0.EM and no CR4.OSFXSR: VEX needs neither",
        "c5f8104b10",
        reads(0x10, 16),
        {"zmm1": dev(0x10, 16)},
        ctl=em_without_osfxsr,
    ),
    VRow("vpbroadcastd without AVX2: #UD", "c4e279584b04", [], fault=(UD, None, None), hide=("avx2",), at=4),
]

SSE_FAULTS = [
    VRow("movups with CR0.EM: #UD", "0f104b10", [], fault=(UD, None, None), ctl=cr0(CR0_EM)),
    VRow("movups without CR4.OSFXSR: #UD", "0f104b10", [], fault=(UD, None, None), ctl=no_cr4(CR4_OSFXSR)),
    VRow("movups with CR0.TS: #NM", "0f104b10", [], fault=(NM, None, None), ctl=cr0(CR0_TS)),
    VRow("movdqa without SSE2: #UD", "660f6f4b30", [], fault=(UD, None, None), hide=("sse2",)),
    VRow("movddup without SSE3: #UD", "f20f124b04", [], fault=(UD, None, None), hide=("sse3",)),
    VRow("movntdqa without SSE4.1: #UD", "660f382a4b10", [], fault=(UD, None, None), hide=("sse4_1",)),
    VRow("movq mm1,[rbx+8] with CR0.EM: #UD", "0f6f4b08", [], fault=(UD, None, None), ctl=cr0(CR0_EM)),
    VRow("movq mm1,[rbx+8] with CR0.TS: #NM", "0f6f4b08", [], fault=(NM, None, None), ctl=cr0(CR0_TS)),
    VRow("movq mm1,[rbx+8] without MMX: #UD", "0f6f4b08", [], fault=(UD, None, None), hide=("mmx",)),
    VRow(
        "movq mm1,[rbx+8] with an x87 exception pending: #MF",
        "0f6f4b08",
        [],
        fault=(MF, None, None),
        before={"fsw": TOP | 0x80},
    ),
    VRow(
        "movups [rbx+0x1ff8],xmm1: #PF(W) at the page, nothing written",
        "0f118bf81f0000",
        [],
        fault=(PF, 2, MMIO + 0x2000),
        at=0x1FF8,
    ),
    VRow(
        "movups xmm1,[rbx+0x1ff8]: #PF at the page",
        "0f108bf81f0000",
        [],
        fault=(PF, 0, MMIO + 0x2000),
        at=0x1FF8,
    ),
    VRow(
        "movups [rbx+0x4000],xmm1 through a read-only mapping: #PF(P|W)",
        "0f118b00400000",
        [],
        fault=(PF, 3, MMIO + 0x4000),
    ),
    VRow(
        "movups xmm1,[rbx+0x1ff8] at CPL 3: #PF(U)",
        "0f108bf81f0000",
        [],
        fault=(PF, 4, MMIO + 0x2000),
        at=0x1FF8,
        user=True,
    ),
    VRow(
        "movaps xmm1,[rsp+8] non-canonical: #GP(0) for the alignment, not #SS",
        "0f284c2408",
        [],
        fault=(GP, 0, None),
        gprs={RSP: 0x8000_0000_0000_0000},
    ),
    VRow(
        "movaps xmm1,[rsp] non-canonical and aligned: #SS(0)",
        "0f280c24",
        [],
        fault=(SS, 0, None),
        gprs={RSP: 0x8000_0000_0000_0000},
    ),
    VRow(
        "maskmovdqu at rdi = 0x1ffc, no byte selected: #PF at the high qword",
        "660ff7ca",
        [],
        fault=(PF, 2, MMIO + 0x2004),
        before={"zmm2": 0},
        gprs={RDI: MMIO + 0x1FFC},
        at=0x1FFC,
    ),
    VRow(
        "maskmovq at rdi = 0x2000: #PF, TOP 0 and the tags valid even so",
        "0ff7ca",
        [],
        MMX_DONE,
        fault=(PF, 2, MMIO + 0x2000),
        before={"mm2": 0},
        gprs={RDI: MMIO + 0x2000},
    ),
    VRow(
        "movq [rbx+0x1ffc],mm1: #PF, TOP 0 but the tags kept",
        "0f7f8bfc1f0000",
        [],
        {"fsw": 0},
        fault=(PF, 2, MMIO + 0x2000),
        at=0x1FFC,
    ),
    VRow(
        "movq mm1,[rbx+0x1ffc]: #PF, the x87 state untouched",
        "0f6f8bfc1f0000",
        [],
        fault=(PF, 0, MMIO + 0x2000),
        at=0x1FFC,
    ),
]

RFLAGS_AC = 1 << 18
ALIGNMENT_CHECKS = [
    VRow(
        "movsd xmm1,[rbx+1] at CPL 3 with AC: #AC(0)",
        "f20f104b01",
        [],
        fault=(AC, 0, None),
        user=True,
        rflags=RFLAGS_AC,
        at=1,
    ),
    VRow(
        "movups xmm1,[rbx+1] at CPL 3 with AC: no #AC for 16 bytes",
        "0f104b01",
        [Rd(1, 1), Rd(2, 2), Rd(4, 4), Rd(8, 8), Rd(0x10, 1)],
        {"zmm1": merge(1, dev(1, 16))},
        user=True,
        rflags=RFLAGS_AC,
    ),
    VRow(
        "movq [rbx+1],mm1 at CPL 3 with AC: #AC, TOP 0",
        "0f7f4b01",
        [],
        {"fsw": 0},
        fault=(AC, 0, None),
        user=True,
        rflags=RFLAGS_AC,
        at=1,
    ),
    VRow(
        "ldmxcsr [rbx+1] with AC: #AC(0)",
        "0fae5301",
        [],
        fault=(AC, 0, None),
        user=True,
        rflags=RFLAGS_AC,
        at=1,
    ),
    VRow(
        "maskmovdqu at rdi + 8 with AC: no #AC (its qwords are aligned)",
        "660ff7ca",
        [Wr(0x49, 2, z(1, 2, 1))],
        before={"zmm2": 0x8080 << 8},
        gprs={RDI: MMIO + 0x48},
        user=True,
        rflags=RFLAGS_AC,
    ),
    VRow(
        "maskmovdqu at rdi + 1 with AC: #AC(0), whatever the mask",
        "660ff7ca",
        [],
        fault=(AC, 0, None),
        before={"zmm2": 0},
        gprs={RDI: MMIO + 0x41},
        user=True,
        rflags=RFLAGS_AC,
        at=0x41,
    ),
    VRow(
        "vmovdqu32 zmm1{k1},[rbx+1] with AC: masked pieces are not checked",
        "62f17e496f4b01",
        [Rd(0x41, 4)],
        {"zmm1": put(z(1), 0, dev(0x41, 4), 4)},
        before={"k1": 1},
        gprs={RBX: MMIO + 1},
        user=True,
        rflags=RFLAGS_AC,
    ),
]

# EVEX: k1/k2 as the rows set them; "z" in a name is zeroing-masking.
EVEX = [
    VRow("vmovups zmm1,[rbx+0x40]", "62f17c48104b01", reads(0x40, 64), {"zmm1": dev(0x40, 64)}),
    VRow(
        "vmovups xmm17,[rbx+0x10]: bits 511:128 zeroed",
        "62e17c08104b01",
        reads(0x10, 16),
        {"zmm17": dev(0x10, 16)},
    ),
    VRow(
        "vmovupd ymm1{k1},[rbx+0x20]: qwords 0 and 2 merged, bits 511:256 zeroed",
        "62f1fd29104b01",
        [Rd(0x20, 8), Rd(0x30, 8)],
        {"zmm1": dev(0x20, 8) | z(1, 8, 8) << 64 | dev(0x30, 8) << 128 | z(1, 8, 24) << 192},
        before={"k1": 0b0101},
    ),
    VRow(
        "vmovups [rbx+0x40]{k2},zmm1: every element, as an unmasked store",
        "62f17c4a114b01",
        writes(0x40, z(1), 64),
        before={"k2": 0xFFFF},
    ),
    VRow("vmovupd [rbx+0x40],zmm1", "62f1fd48114b01", writes(0x40, z(1), 64)),
    VRow("vmovaps zmm1,[rbx+0x40]", "62f17c48284b01", reads(0x40, 64), {"zmm1": dev(0x40, 64)}),
    VRow(
        "vmovaps zmm1,[rbx+0x20]: #GP(0), 64-byte alignment",
        "62f17c48288b20000000",
        [],
        fault=(GP, 0, None),
        at=0x20,
    ),
    VRow(
        "vmovapd zmm1{k1},[rbx+0x20] with k1 = 0: nothing selected, no #GP",
        "62f1fd49288b20000000",
        [],
        before={"k1": 0},
        at=0x20,
    ),
    VRow(
        "vmovapd zmm1{k1},[rbx+0x20] with k1 = 1: #GP(0)",
        "62f1fd49288b20000000",
        [],
        fault=(GP, 0, None),
        before={"k1": 1},
        at=0x20,
    ),
    VRow("vmovaps [rbx+0x40],zmm1", "62f17c48294b01", writes(0x40, z(1), 64)),
    VRow(
        "vmovapd [rbx+0x40]{k1},zmm1: qwords 0 and 7",
        "62f1fd49294b01",
        [Wr(0x40, 8, z(1, 8)), Wr(0x78, 8, z(1, 8, 56))],
        before={"k1": 0x81},
    ),
    VRow("vmovntps [rbx+0x40],zmm1", "62f17c482b4b01", writes(0x40, z(1), 64)),
    VRow("vmovntpd [rbx+0x40],zmm1", "62f1fd482b4b01", writes(0x40, z(1), 64)),
    VRow(
        "vmovdqa32 zmm1{k1},[rbx+0x40]: dwords 4-7",
        "62f17d496f4b01",
        [Rd(0x50, 8), Rd(0x58, 8)],
        {"zmm1": put(z(1), 16, dev(0x50, 16), 16)},
        before={"k1": 0xF0},
    ),
    VRow(
        "vmovdqa32 zmm1{k1}{z},[rbx+0x40]: dwords 4-7, the others zeroed",
        "62f17dc96f4b01",
        [Rd(0x50, 8), Rd(0x58, 8)],
        {"zmm1": dev(0x50, 16) << 128},
        before={"k1": 0xF0},
    ),
    VRow(
        "vmovdqa64 zmm1{k1},[rbx+8] with k1 = 2: #GP(0)",
        "62f1fd496f8b08000000",
        [],
        fault=(GP, 0, None),
        before={"k1": 2},
        at=8,
    ),
    VRow("vmovdqa64 [rbx+0x40],zmm1", "62f1fd487f4b01", writes(0x40, z(1), 64)),
    VRow(
        "vmovdqa32 [rbx+0x20]{k1},ymm1: dwords 2-5",
        "62f17d297f4b01",
        [Wr(0x28, 8, z(1, 8, 8)), Wr(0x30, 8, z(1, 8, 16))],
        before={"k1": 0b111100},
    ),
    VRow(
        "vmovdqu32 zmm1{k1},[rbx]: dwords 0 and 15",
        "62f17e496f0b",
        [Rd(0, 4), Rd(0x3C, 4)],
        {"zmm1": put(put(z(1), 0, dev(0, 4), 4), 60, dev(0x3C, 4), 4)},
        before={"k1": 0x8001},
    ),
    VRow(
        "vmovdqu32 [rbx]{k1},zmm1: dwords 1-2, one 8-byte request at +4",
        "62f17e497f0b",
        [Wr(4, 8, z(1, 8, 4))],
        before={"k1": 0b110},
    ),
    VRow(
        "vmovdqu64 zmm1{k1}{z},[rbx+4]: qwords 0-1",
        "62f1fec96f8b04000000",
        [Rd(4, 4), Rd(8, 8), Rd(0x10, 4)],
        {"zmm1": dev(4, 16)},
        before={"k1": 3},
    ),
    VRow(
        "vmovdqu64 [rbx+4]{k1},ymm1: qword 3",
        "62f1fe297f8b04000000",
        [Wr(0x1C, 8, z(1, 8, 24))],
        before={"k1": 0b1000},
    ),
    VRow(
        "vmovdqu8 xmm1{k1},[rbx]: bytes 0-2 and 13-15",
        "62f17f096f0b",
        [Rd(0, 2), Rd(2, 1), Rd(13, 1), Rd(14, 2)],
        {"zmm1": put(put(z(1, 16), 0, dev(0, 3), 3), 13, dev(13, 3), 3)},
        before={"k1": 0xE007},
    ),
    VRow(
        "vmovdqu8 [rbx]{k1},zmm1: bytes 0 and 63",
        "62f17f497f0b",
        [Wr(0, 1, z(1, 1)), Wr(0x3F, 1, z(1, 1, 63))],
        before={"k1": 1 << 63 | 1},
    ),
    VRow(
        "vmovdqu16 ymm1{k1},[rbx+2]: words 0-7",
        "62f1ff296f8b02000000",
        [Rd(2, 2), Rd(4, 4), Rd(8, 8), Rd(0x10, 2)],
        {"zmm1": put(z(1, 32), 0, dev(2, 16), 16)},
        before={"k1": 0xFF},
    ),
    VRow(
        "vmovdqu16 [rbx+2]{k1},xmm1: word 7",
        "62f1ff097f8b02000000",
        [Wr(0x10, 2, z(1, 2, 14))],
        before={"k1": 0x80},
    ),
    VRow("vmovntdq [rbx+0x40],zmm1", "62f17d48e74b01", writes(0x40, z(1), 64)),
    VRow("vmovntdqa zmm1,[rbx+0x40]", "62f27d482a4b01", reads(0x40, 64), {"zmm1": dev(0x40, 64)}),
    VRow(
        "vmovdqu32 zmm1{k1},zmm2: dwords 0-7 from zmm2",
        "62f17e496fca",
        [],
        {"zmm1": put(z(1), 0, z(2, 32), 32)},
        before={"k1": 0xFF},
    ),
    VRow("vmovdqu64 zmm2{k1}{z},zmm1", "62f1fec96fd1", [], {"zmm2": z(1, 32)}, before={"k1": 0x0F}),
    VRow("vmovdqu32 zmm20,zmm1", "62e17e486fe1", [], {"zmm20": z(1)}),
    VRow(
        "vmovdqu32 zmm1{k1},[rbx+0x1ff8]: dwords 0-1, the unselected ones are past the page",
        "62f17e496f8bf81f0000",
        [Rd(0x1FF8, 8)],
        {"zmm1": put(z(1), 0, dev(0x1FF8, 8), 8)},
        before={"k1": 0b11},
    ),
    VRow(
        "vmovdqu32 zmm1{k1},[rbx+0x1ff8]: dword 2 past the page, #PF",
        "62f17e496f8bf81f0000",
        [],
        fault=(PF, 0, MMIO + 0x2000),
        before={"k1": 0b100},
        at=0x1FF8,
    ),
    VRow(
        "vmovdqu32 [rbx+0x1ff8]{k1},zmm1: dwords 1-2 across the page, #PF at the last selected byte",
        "62f17e497f8bf81f0000",
        [],
        fault=(PF, 2, MMIO + 0x2003),
        before={"k1": 0b110},
        at=0x1FF8,
    ),
]

EVEX_FAULTS = [
    VRow(
        "vmovups zmm1 without AVX512F: #UD",
        "62f17c48104b01",
        [],
        fault=(UD, None, None),
        hide=("avx512f",),
        at=0x40,
    ),
    VRow(
        "vmovups xmm17 without AVX512VL: #UD",
        "62e17c08104b01",
        [],
        fault=(UD, None, None),
        hide=("avx512vl",),
        at=0x10,
    ),
    VRow("vmovdqu8 without AVX512BW: #UD", "62f17f486f0b", [], fault=(UD, None, None), hide=("avx512bw",)),
    VRow(
        "vmovdqu32 with XCR0 without the opmask state: #UD",
        "62f17e486f0b",
        [],
        fault=(UD, None, None),
        ctl=xcr0(7),
    ),
    VRow("vmovdqu32 with CR0.TS: #NM", "62f17e486f0b", [], fault=(NM, None, None), ctl=cr0(CR0_TS)),
    VRow("vmovdqu32 [rbx]{k1}{z},zmm1: zeroing a store, #UD", "62f17ec97f0b", [], fault=(UD, None, None)),
    VRow("vmovdqu32 zmm1{z},[rbx] without an opmask: #UD", "62f17ec86f0b", [], fault=(UD, None, None)),
    VRow("vmovdqu32 with EVEX.b: #UD", "62f17e586f0b", [], fault=(UD, None, None)),
    VRow("vmovdqu32 with EVEX.L'L = 3: #UD", "62f17e686f0b", [], fault=(UD, None, None)),
    VRow("vmovdqu32 with vvvv != 1111b: #UD", "62f176486f0b", [], fault=(UD, None, None)),
    VRow("vmovdqu32 with EVEX.V' = 0: #UD", "62f17e406f0b", [], fault=(UD, None, None)),
    VRow(
        "vmovntdq [rbx+0x40]{k1},zmm1: no opmask allowed, #UD",
        "62f17d49e74b01",
        [],
        fault=(UD, None, None),
        at=0x40,
    ),
    VRow("vmovups with W1 (not vmovupd): #UD", "62f1fc48104b01", [], fault=(UD, None, None), at=0x40),
]

ALL_ROWS = LEGACY + MMX + SSE_FAULTS + ALIGNMENT_CHECKS + VEX + MASKED_VEX + VEX_FAULTS + EVEX + EVEX_FAULTS


@pytest.mark.parametrize("row", LEGACY + MMX, ids=ids(LEGACY + MMX))
def test_sse_and_mmx(row: VRow) -> None:
    run_row(row)


@pytest.mark.parametrize("row", SSE_FAULTS + ALIGNMENT_CHECKS, ids=ids(SSE_FAULTS + ALIGNMENT_CHECKS))
def test_sse_faults(row: VRow) -> None:
    run_row(row)


@pytest.mark.parametrize("row", VEX + MASKED_VEX, ids=ids(VEX + MASKED_VEX))
def test_vex(row: VRow) -> None:
    run_row(row)


@pytest.mark.parametrize("row", VEX_FAULTS, ids=ids(VEX_FAULTS))
def test_vex_faults(row: VRow) -> None:
    run_row(row)


@pytest.mark.parametrize("row", EVEX, ids=ids(EVEX))
def test_evex(row: VRow) -> None:
    run_row(row)


@pytest.mark.parametrize("row", EVEX_FAULTS, ids=ids(EVEX_FAULTS))
def test_evex_faults(row: VRow) -> None:
    run_row(row)


def test_rows_cover_every_vector_form() -> None:
    """Every row of the legacy, VEX and EVEX move tables is run by some row that does not fault."""
    covered = set()
    for row in ALL_ROWS:
        insn = decode(bytes.fromhex(row.code), 64)
        assert isinstance(insn, Insn), row.name
        if row.fault is None or row.fault[0] not in (UD, NM):
            covered.add(table_key(insn))
    missing = sorted(map(str, table_keys() - covered))
    assert missing == [], "\n".join(missing)
