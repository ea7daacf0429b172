"""Vector state for the oracles: the CPU state vector cases run in, its wire format for the host CPU
runner, and the comparison of what each executor holds.

Vector cases run as the host runs them: CPL 3 in 64-bit mode, CR0.AM set (Linux sets it, so RFLAGS.AC
enables #AC), SSE enabled (CR0.MP|NE|ET, CR4.OSFXSR|OSXMMEXCPT), CR4.OSXSAVE with XCR0 = x87|SSE|AVX and
the three AVX-512 components. On vmmio the window is mapped with 4 KiB user pages and the page after it
is not present, as in the host runner's address space, so a page-crossing access past the window raises
the #PF the host raises.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from harness import MMIO, PT_POOL, Guest

from oracles.gen import WINDOW, WINDOW_SIZE
from vmmio.x86.pagetables import PAGE_1G, PAGE_4K, RW, US, P, PageTables
from vmmio.x86.state import (
    CR0_AM,
    CR0_SSE,
    CR4_OSXSAVE,
    CR4_SSE,
    XCR0_AVX,
    XCR0_AVX512,
    XCR0_SSE,
    XCR0_X87,
    VectorState,
)

__all__ = ["HOST", "KVM", "UNICORN", "XCR0", "Scope", "diffs", "pack", "prepare", "unpack"]

XCR0 = XCR0_X87 | XCR0_SSE | XCR0_AVX | XCR0_AVX512
FCW = 0x37F  # the x87 control word every case runs with (its reset value)

# struct vecstate of the host runner: ZMM0-31, k0-7, MXCSR, FCW, FSW, abridged FTW, R0-R7 (80 bits each).
_WIRE = struct.Struct("<2048s8QIHHB7x80s")
WIRE_SIZE = _WIRE.size


def pack(vec: VectorState | None) -> bytes:
    """The runner's vecstate for `vec` (a reset state when None)."""
    v = vec if vec is not None else VectorState()
    zmm = b"".join(z.to_bytes(64, "little") for z in v.zmm)
    fpr = b"".join((v.mm[n] | v.mm_hi[n] << 64).to_bytes(10, "little") for n in range(8))
    return _WIRE.pack(zmm, *v.k, v.mxcsr, FCW, v.fsw, v.ftw, fpr)


def unpack(data: bytes) -> VectorState:
    zmm, *rest = _WIRE.unpack(data)
    k, (mxcsr, _fcw, fsw, ftw, fpr) = rest[:8], rest[8:]
    regs = [int.from_bytes(fpr[10 * n : 10 * n + 10], "little") for n in range(8)]
    return VectorState(
        [int.from_bytes(zmm[64 * n : 64 * n + 64], "little") for n in range(32)],
        list(k),
        mxcsr,
        [r & (1 << 64) - 1 for r in regs],
        fsw,
        ftw,
        [r >> 64 for r in regs],
    )


@dataclass(frozen=True)
class Scope:
    """The part of the vector state an executor holds (and is compared)."""

    name: str
    regs: int  # vector registers: 16 or 32
    bits: int  # of each: 128, 256 or 512
    opmask: bool
    x87: bool  # FSW TOP and ES, the tags
    x87_hi: bool = True  # bits 79:64 of the x87 registers (an MMX write sets them)


HOST = Scope("host CPU", 32, 512, True, True)
# Unicorn has YMM0-15 and no opmasks; its MMX writes leave bits 79:64 alone (known.py: mmx-exponent).
UNICORN = Scope("unicorn", 16, 256, False, True, False)
KVM = Scope("KVM", 32, 512, True, True)


def _pairs(name: str, want: list[int], got: list[int], names: tuple[str, str], fmt: str = "#x") -> list[str]:
    a, b = names
    return [
        f"{name}{n}: {a} {w:{fmt}} {b} {g:{fmt}}"
        for n, (w, g) in enumerate(zip(want, got, strict=True))
        if w != g
    ]


def diffs(want: VectorState, got: VectorState, scope: Scope, want_name: str, got_name: str) -> list[str]:
    """Differences between two vector states within `scope`, as readable lines."""
    names = (want_name, got_name)
    m = (1 << scope.bits) - 1
    n = scope.regs
    out = _pairs("zmm", [z & m for z in want.zmm[:n]], [z & m for z in got.zmm[:n]], names)
    if scope.opmask:
        out += _pairs("k", want.k, got.k, names)
    out += _pairs("mxcsr", [want.mxcsr], [got.mxcsr], names)
    out += _pairs("mm", want.mm, got.mm, names)
    if scope.x87:
        # TOP (13:11) and ES (7) of FSW: what MMX instructions read and change.
        out += _pairs("x87 FSW.TOP/ES", [want.fsw & 0x3880], [got.fsw & 0x3880], names)
        out += _pairs("x87 tags", [want.ftw], [got.ftw], names, "#04x")
    if scope.x87_hi:
        out += _pairs("x87 R bits 79:64, R", want.mm_hi, got.mm_hi, names)
    return out


def prepare(guest: Guest, vec: VectorState) -> None:
    """Put a harness guest in the vector cases' CPU state (see the module docstring)."""
    pt = PageTables(PT_POOL)
    flags = P | RW | US
    pt.map(0, 0, PAGE_1G, flags)
    for page in range(0, WINDOW_SIZE, PAGE_4K):
        pt.map(WINDOW + page, MMIO + page, PAGE_4K, flags)
    for n in (2, 3):
        pt.map(n * PAGE_1G, n * PAGE_1G, PAGE_1G, flags)
    guest.vm.memory.write(PT_POOL, bytes(pt.end - PT_POOL))
    guest.pt = pt
    guest.write_tables()
    ctl = guest.backend.control
    ctl.cr3 = pt.root
    ctl.cr0 |= CR0_SSE | CR0_AM
    ctl.cr4 |= CR4_SSE | CR4_OSXSAVE
    ctl.xcr0 = XCR0
    ctl.cpl = 3
    guest.backend.vector = vec.copy()
