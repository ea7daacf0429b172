"""Hypothesis strategies for the vector moves: one MMX, SSE, VEX or EVEX move with a vector state whose
memory operand lands in the MMIO window, runnable on every oracle.

Each `VSpec` is one form at one vector length and W; a case draws its encoding (legacy prefixes and REX,
VEX two- or three-byte, EVEX with R'/X/V' and the opmask fields), ModRM/SIB/displacement (EVEX disp8*N
included), registers solved so that the operand lands where the case wants it (`gen.solve`), the
vector registers, opmasks, MXCSR and x87 state, and for masked forms the mask. Placements: aligned,
misaligned, across the window's page boundary, at its edges, and past its end into the page the host
runner leaves unmapped (tag "past-end": only the host CPU and vmmio can run those).

Planned accesses (`Case.accesses`) are the data accesses the move makes: the whole operand, or for a
masked move one access per run of contiguous selected elements (`vmmio.vmm.semantics.masked`).
"Perturbed" cases (tag) change a field a form may not use (VEX.L, W, vvvv, EVEX.b/z/L'L/V'): whatever
the CPU does with them is compared, but they have no plan.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hypothesis import assume
from hypothesis import strategies as st

from oracles.gen import (
    CODE,
    MASK64,
    PAGE,
    SEG_PREFIX,
    WINDOW,
    WINDOW_SIZE,
    Access,
    Case,
    Rng,
    decode_shape,
    effective_address,
    first_mmio,
    seg_choices,
    solve,
)
from vmmio.vmm.semantics import avx512_moves, avx_moves, sse_moves
from vmmio.vmm.semantics.vector import fields
from vmmio.x86.insn import Encoding, Insn
from vmmio.x86.state import MXCSR_DEFAULT, VectorState

__all__ = [
    "VECTOR_FAMILIES",
    "VSPECS",
    "VSpec",
    "table_key",
    "table_keys",
    "vector_case",
    "vector_cases",
    "vspecs_of",
]

LEGACY, VEX, EVEX = 0, 1, 2
NP, P66, PF3, PF2 = 0, 1, 2, 3
_PP_BYTE = {P66: 0x66, PF3: 0xF3, PF2: 0xF2}
_ESCAPE = {1: b"\x0f", 2: b"\x0f\x38", 3: b"\x0f\x3a"}
VECTOR_FAMILIES = ("mmx", "sse", "vex", "evex")


@dataclass(frozen=True)
class VSpec:
    """One vector move form at one vector length (and W where W selects the form)."""

    name: str
    family: str
    enc: int
    opmap: int
    opcode: int
    pp: int
    kind: str  # "load", "store", "reg" (no memory operand), "mload"/"mstore" (masked), "maskmov"
    msize: int  # bytes of the memory operand (MASKMOVQ/MASKMOVDQU: of the masked store)
    l: int = 0  # VEX.L / EVEX.L'L
    w: int | None = None  # W the form needs, None where it is ignored (drawn)
    align: int = 0  # alignment the form requires (#GP(0) otherwise)
    mem: bool = True  # has a memory form
    reg: bool = True  # has a register form
    vvvv: bool = False  # uses VEX/EVEX.vvvv (else 1111b)
    imm: bool = False
    esize: int = 0  # element size of a masked form (EVEX: of its opmask)
    gpr: bool = False  # the register form's r/m is a GPR
    group: int | None = None  # fixed ModRM.reg
    features: tuple[str, ...] = ()  # host CPU flags needed (/proc/cpuinfo names)
    mxcsr: bool = False  # LDMXCSR: the operand is an MXCSR image


def _legacy() -> list[VSpec]:
    S = VSpec
    M, X = "mmx", "sse"
    s = [
        S("movd mm, r/m32", M, LEGACY, 1, 0x6E, NP, "load", 4, w=0, gpr=True),
        S("movq mm, r/m64", M, LEGACY, 1, 0x6E, NP, "load", 8, w=1, gpr=True),
        S("movd r/m32, mm", M, LEGACY, 1, 0x7E, NP, "store", 4, w=0, gpr=True),
        S("movq r/m64, mm", M, LEGACY, 1, 0x7E, NP, "store", 8, w=1, gpr=True),
        S("movq mm, mm/m64", M, LEGACY, 1, 0x6F, NP, "load", 8),
        S("movq mm/m64, mm", M, LEGACY, 1, 0x7F, NP, "store", 8),
        S("movntq m64, mm", M, LEGACY, 1, 0xE7, NP, "store", 8, reg=False),
        S("pinsrw mm, r32/m16, imm8", M, LEGACY, 1, 0xC4, NP, "load", 2, imm=True, gpr=True),
        S("maskmovq mm, mm", M, LEGACY, 1, 0xF7, NP, "maskmov", 8, mem=False),
        S("movq2dq xmm, mm", M, LEGACY, 1, 0xD6, PF3, "reg", 0, mem=False),
        S("movdq2q mm, xmm", M, LEGACY, 1, 0xD6, PF2, "reg", 0, mem=False),
    ]
    for op, names in (
        (0x10, ("movups", "movupd", "movss", "movsd")),
        (0x11, ("movups", "movupd", "movss", "movsd")),
    ):
        kind = "load" if op == 0x10 else "store"
        for pp, name, size in zip((NP, P66, PF3, PF2), names, (16, 16, 4, 8), strict=True):
            s.append(S(f"{name} ({op:02x})", X, LEGACY, 1, op, pp, kind, size))
    s += [
        S("movlps xmm, m64", X, LEGACY, 1, 0x12, NP, "load", 8, reg=False),
        S("movhlps xmm, xmm", X, LEGACY, 1, 0x12, NP, "reg", 0, mem=False),
        S("movlpd xmm, m64", X, LEGACY, 1, 0x12, P66, "load", 8, reg=False),
        S("movsldup xmm, xmm/m128", X, LEGACY, 1, 0x12, PF3, "load", 16, align=16),
        S("movddup xmm, xmm/m64", X, LEGACY, 1, 0x12, PF2, "load", 8),
        S("movlps m64, xmm", X, LEGACY, 1, 0x13, NP, "store", 8, reg=False),
        S("movlpd m64, xmm", X, LEGACY, 1, 0x13, P66, "store", 8, reg=False),
        S("movhps xmm, m64", X, LEGACY, 1, 0x16, NP, "load", 8, reg=False),
        S("movlhps xmm, xmm", X, LEGACY, 1, 0x16, NP, "reg", 0, mem=False),
        S("movhpd xmm, m64", X, LEGACY, 1, 0x16, P66, "load", 8, reg=False),
        S("movshdup xmm, xmm/m128", X, LEGACY, 1, 0x16, PF3, "load", 16, align=16),
        S("movhps m64, xmm", X, LEGACY, 1, 0x17, NP, "store", 8, reg=False),
        S("movhpd m64, xmm", X, LEGACY, 1, 0x17, P66, "store", 8, reg=False),
        S("movaps xmm, xmm/m128", X, LEGACY, 1, 0x28, NP, "load", 16, align=16),
        S("movapd xmm, xmm/m128", X, LEGACY, 1, 0x28, P66, "load", 16, align=16),
        S("movaps xmm/m128, xmm", X, LEGACY, 1, 0x29, NP, "store", 16, align=16),
        S("movapd xmm/m128, xmm", X, LEGACY, 1, 0x29, P66, "store", 16, align=16),
        S("movntps m128, xmm", X, LEGACY, 1, 0x2B, NP, "store", 16, align=16, reg=False),
        S("movntpd m128, xmm", X, LEGACY, 1, 0x2B, P66, "store", 16, align=16, reg=False),
        S("movd xmm, r/m32", X, LEGACY, 1, 0x6E, P66, "load", 4, w=0, gpr=True),
        S("movq xmm, r/m64", X, LEGACY, 1, 0x6E, P66, "load", 8, w=1, gpr=True),
        S("movd r/m32, xmm", X, LEGACY, 1, 0x7E, P66, "store", 4, w=0, gpr=True),
        S("movq r/m64, xmm", X, LEGACY, 1, 0x7E, P66, "store", 8, w=1, gpr=True),
        S("movq xmm, xmm/m64 (f3 7e)", X, LEGACY, 1, 0x7E, PF3, "load", 8),
        S("movdqa xmm, xmm/m128", X, LEGACY, 1, 0x6F, P66, "load", 16, align=16),
        S("movdqu xmm, xmm/m128", X, LEGACY, 1, 0x6F, PF3, "load", 16),
        S("movdqa xmm/m128, xmm", X, LEGACY, 1, 0x7F, P66, "store", 16, align=16),
        S("movdqu xmm/m128, xmm", X, LEGACY, 1, 0x7F, PF3, "store", 16),
        S("movq xmm/m64, xmm (66 d6)", X, LEGACY, 1, 0xD6, P66, "store", 8),
        S("movntdq m128, xmm", X, LEGACY, 1, 0xE7, P66, "store", 16, align=16, reg=False),
        S("lddqu xmm, m128", X, LEGACY, 1, 0xF0, PF2, "load", 16, reg=False),
        S("pinsrw xmm, r32/m16, imm8", X, LEGACY, 1, 0xC4, P66, "load", 2, imm=True, gpr=True),
        S("maskmovdqu xmm, xmm", X, LEGACY, 1, 0xF7, P66, "maskmov", 16, mem=False),
        S("ldmxcsr m32", X, LEGACY, 1, 0xAE, NP, "load", 4, reg=False, group=2, mxcsr=True),
        S("stmxcsr m32", X, LEGACY, 1, 0xAE, NP, "store", 4, reg=False, group=3),
        S("movntdqa xmm, m128", X, LEGACY, 2, 0x2A, P66, "load", 16, align=16, reg=False),
        S("pextrb r/m8, xmm, imm8", X, LEGACY, 3, 0x14, P66, "store", 1, imm=True, gpr=True),
        S("pextrw r/m16, xmm, imm8", X, LEGACY, 3, 0x15, P66, "store", 2, imm=True, gpr=True),
        S("pextrd r/m32, xmm, imm8", X, LEGACY, 3, 0x16, P66, "store", 4, w=0, imm=True, gpr=True),
        S("pextrq r/m64, xmm, imm8", X, LEGACY, 3, 0x16, P66, "store", 8, w=1, imm=True, gpr=True),
        S("extractps r/m32, xmm, imm8", X, LEGACY, 3, 0x17, P66, "store", 4, imm=True, gpr=True),
        S("pinsrb xmm, r32/m8, imm8", X, LEGACY, 3, 0x20, P66, "load", 1, imm=True, gpr=True),
        S("pinsrd xmm, r/m32, imm8", X, LEGACY, 3, 0x22, P66, "load", 4, w=0, imm=True, gpr=True),
        S("pinsrq xmm, r/m64, imm8", X, LEGACY, 3, 0x22, P66, "load", 8, w=1, imm=True, gpr=True),
    ]
    return s


def _vex() -> list[VSpec]:
    S = VSpec
    s: list[VSpec] = []

    Feats = tuple[str, ...]
    avx: Feats = ("avx",)
    avx2: Feats = ("avx2",)

    def both(name: str, op: int, pp: int, kind: str, *, align: bool = False, mem_only: bool = False,
             feats: Feats = ("avx",), m: int = 1, w: int | None = None, esize: int = 0, vvvv: bool = False,
             l1feats: Feats | None = None, sizes: tuple[int, int] = (16, 32)) -> None:  # fmt: skip
        for l, size in enumerate(sizes):
            f = feats if l == 0 or l1feats is None else l1feats
            vl = ("xmm", "ymm")[l]
            s.append(S(f"{name} {vl}", "vex", VEX, m, op, pp, kind, size, l, w, size if align else 0,
                       reg=not mem_only, vvvv=vvvv, esize=esize, features=f))  # fmt: skip

    def x128(name: str, op: int, pp: int, kind: str, size: int, m: int = 1, **kw: object) -> None:
        s.append(S(name, "vex", VEX, m, op, pp, kind, size, 0, features=("avx",), **kw))  # type: ignore[arg-type]

    both("vmovups load", 0x10, NP, "load")
    both("vmovupd load", 0x10, P66, "load")
    both("vmovups store", 0x11, NP, "store")
    both("vmovupd store", 0x11, P66, "store")
    both("vmovaps load", 0x28, NP, "load", align=True)
    both("vmovapd load", 0x28, P66, "load", align=True)
    both("vmovaps store", 0x29, NP, "store", align=True)
    both("vmovapd store", 0x29, P66, "store", align=True)
    both("vmovntps", 0x2B, NP, "store", align=True, mem_only=True)
    both("vmovntpd", 0x2B, P66, "store", align=True, mem_only=True)
    both("vmovdqa load", 0x6F, P66, "load", align=True)
    both("vmovdqu load", 0x6F, PF3, "load")
    both("vmovdqa store", 0x7F, P66, "store", align=True)
    both("vmovdqu store", 0x7F, PF3, "store")
    both("vmovntdq", 0xE7, P66, "store", align=True, mem_only=True)
    both("vlddqu", 0xF0, PF2, "load", mem_only=True)
    both("vmovsldup", 0x12, PF3, "load")
    both("vmovshdup", 0x16, PF3, "load")
    both("vmovddup", 0x12, PF2, "load", sizes=(8, 32))
    both("vmovntdqa", 0x2A, P66, "load", align=True, mem_only=True, m=2, l1feats=avx2)
    both("vmaskmovps load", 0x2C, P66, "mload", m=2, w=0, esize=4, vvvv=True, mem_only=True)
    both("vmaskmovpd load", 0x2D, P66, "mload", m=2, w=0, esize=8, vvvv=True, mem_only=True)
    both("vmaskmovps store", 0x2E, P66, "mstore", m=2, w=0, esize=4, vvvv=True, mem_only=True)
    both("vmaskmovpd store", 0x2F, P66, "mstore", m=2, w=0, esize=8, vvvv=True, mem_only=True)
    both("vpmaskmovd load", 0x8C, P66, "mload", m=2, w=0, esize=4, vvvv=True, mem_only=True, feats=avx2)
    both("vpmaskmovq load", 0x8C, P66, "mload", m=2, w=1, esize=8, vvvv=True, mem_only=True, feats=avx2)
    both("vpmaskmovd store", 0x8E, P66, "mstore", m=2, w=0, esize=4, vvvv=True, mem_only=True, feats=avx2)
    both("vpmaskmovq store", 0x8E, P66, "mstore", m=2, w=1, esize=8, vvvv=True, mem_only=True, feats=avx2)
    both("vbroadcastss", 0x18, P66, "load", m=2, w=0, sizes=(4, 4), mem_only=True)
    both("vpbroadcastb", 0x78, P66, "load", m=2, w=0, sizes=(1, 1), feats=avx2)
    both("vpbroadcastw", 0x79, P66, "load", m=2, w=0, sizes=(2, 2), feats=avx2)
    both("vpbroadcastd", 0x58, P66, "load", m=2, w=0, sizes=(4, 4), feats=avx2)
    both("vpbroadcastq", 0x59, P66, "load", m=2, w=0, sizes=(8, 8), feats=avx2)
    s += [
        S("vbroadcastss ymm, xmm", "vex", VEX, 2, 0x18, P66, "reg", 0, 1, 0, mem=False, features=avx2),
        S("vbroadcastsd ymm, m64", "vex", VEX, 2, 0x19, P66, "load", 8, 1, 0, features=avx2),
        S("vbroadcastf128 ymm, m128", "vex", VEX, 2, 0x1A, P66, "load", 16, 1, 0, reg=False, features=avx),
        S("vbroadcasti128 ymm, m128", "vex", VEX, 2, 0x5A, P66, "load", 16, 1, 0, reg=False, features=avx2),
    ]  # fmt: skip
    x128("vmovss load", 0x10, PF3, "load", 4, reg=False)
    x128("vmovsd load", 0x10, PF2, "load", 8, reg=False)
    x128("vmovss store", 0x11, PF3, "store", 4, reg=False)
    x128("vmovsd store", 0x11, PF2, "store", 8, reg=False)
    x128("vmovss xmm, xmm, xmm", 0x10, PF3, "reg", 0, mem=False, vvvv=True)
    x128("vmovsd xmm, xmm, xmm (11)", 0x11, PF2, "reg", 0, mem=False, vvvv=True)
    x128("vmovlps xmm, xmm, m64", 0x12, NP, "load", 8, reg=False, vvvv=True)
    x128("vmovhlps xmm, xmm, xmm", 0x12, NP, "reg", 0, mem=False, vvvv=True)
    x128("vmovlpd xmm, xmm, m64", 0x12, P66, "load", 8, reg=False, vvvv=True)
    x128("vmovlps m64, xmm", 0x13, NP, "store", 8, reg=False)
    x128("vmovlpd m64, xmm", 0x13, P66, "store", 8, reg=False)
    x128("vmovhps xmm, xmm, m64", 0x16, NP, "load", 8, reg=False, vvvv=True)
    x128("vmovlhps xmm, xmm, xmm", 0x16, NP, "reg", 0, mem=False, vvvv=True)
    x128("vmovhpd xmm, xmm, m64", 0x16, P66, "load", 8, reg=False, vvvv=True)
    x128("vmovhps m64, xmm", 0x17, NP, "store", 8, reg=False)
    x128("vmovhpd m64, xmm", 0x17, P66, "store", 8, reg=False)
    x128("vmovd xmm, r/m32", 0x6E, P66, "load", 4, w=0, gpr=True)
    x128("vmovq xmm, r/m64", 0x6E, P66, "load", 8, w=1, gpr=True)
    x128("vmovd r/m32, xmm", 0x7E, P66, "store", 4, w=0, gpr=True)
    x128("vmovq r/m64, xmm", 0x7E, P66, "store", 8, w=1, gpr=True)
    x128("vmovq xmm, xmm/m64 (f3 7e)", 0x7E, PF3, "load", 8)
    x128("vmovq xmm/m64, xmm (66 d6)", 0xD6, P66, "store", 8)
    x128("vpinsrw xmm, xmm, r32/m16, imm8", 0xC4, P66, "load", 2, imm=True, gpr=True, vvvv=True)
    x128("vmaskmovdqu xmm, xmm", 0xF7, P66, "maskmov", 16, mem=False)
    x128("vldmxcsr m32", 0xAE, NP, "load", 4, reg=False, group=2, mxcsr=True)
    x128("vstmxcsr m32", 0xAE, NP, "store", 4, reg=False, group=3)
    x128("vpextrb r/m8, xmm, imm8", 0x14, P66, "store", 1, m=3, imm=True, gpr=True)
    x128("vpextrw r/m16, xmm, imm8", 0x15, P66, "store", 2, m=3, imm=True, gpr=True)
    x128("vpextrd r/m32, xmm, imm8", 0x16, P66, "store", 4, m=3, w=0, imm=True, gpr=True)
    x128("vpextrq r/m64, xmm, imm8", 0x16, P66, "store", 8, m=3, w=1, imm=True, gpr=True)
    x128("vextractps r/m32, xmm, imm8", 0x17, P66, "store", 4, m=3, imm=True, gpr=True)
    x128("vpinsrb xmm, xmm, r32/m8, imm8", 0x20, P66, "load", 1, m=3, imm=True, gpr=True, vvvv=True)
    x128("vpinsrd xmm, xmm, r/m32, imm8", 0x22, P66, "load", 4, m=3, w=0, imm=True, gpr=True, vvvv=True)
    x128("vpinsrq xmm, xmm, r/m64, imm8", 0x22, P66, "load", 8, m=3, w=1, imm=True, gpr=True, vvvv=True)
    return s


def _evex() -> list[VSpec]:
    out: list[VSpec] = []
    rows = (
        ("vmovups", 0x10, NP, 0, "load", 4, False, 1),
        ("vmovupd", 0x10, P66, 1, "load", 8, False, 1),
        ("vmovups", 0x11, NP, 0, "store", 4, False, 1),
        ("vmovupd", 0x11, P66, 1, "store", 8, False, 1),
        ("vmovaps", 0x28, NP, 0, "load", 4, True, 1),
        ("vmovapd", 0x28, P66, 1, "load", 8, True, 1),
        ("vmovaps", 0x29, NP, 0, "store", 4, True, 1),
        ("vmovapd", 0x29, P66, 1, "store", 8, True, 1),
        ("vmovntps", 0x2B, NP, 0, "store", 4, True, 1),
        ("vmovntpd", 0x2B, P66, 1, "store", 8, True, 1),
        ("vmovdqa32", 0x6F, P66, 0, "load", 4, True, 1),
        ("vmovdqa64", 0x6F, P66, 1, "load", 8, True, 1),
        ("vmovdqu32", 0x6F, PF3, 0, "load", 4, False, 1),
        ("vmovdqu64", 0x6F, PF3, 1, "load", 8, False, 1),
        ("vmovdqu8", 0x6F, PF2, 0, "load", 1, False, 1),
        ("vmovdqu16", 0x6F, PF2, 1, "load", 2, False, 1),
        ("vmovdqa32", 0x7F, P66, 0, "store", 4, True, 1),
        ("vmovdqa64", 0x7F, P66, 1, "store", 8, True, 1),
        ("vmovdqu32", 0x7F, PF3, 0, "store", 4, False, 1),
        ("vmovdqu64", 0x7F, PF3, 1, "store", 8, False, 1),
        ("vmovdqu8", 0x7F, PF2, 0, "store", 1, False, 1),
        ("vmovdqu16", 0x7F, PF2, 1, "store", 2, False, 1),
        ("vmovntdq", 0xE7, P66, 0, "store", 4, True, 1),
        ("vmovntdqa", 0x2A, P66, 0, "load", 4, True, 2),
    )
    for name, op, pp, w, kind, esize, align, m in rows:
        nt = name.startswith("vmovnt")
        for l, vl in enumerate((16, 32, 64)):
            feats = ("avx512f",) + (("avx512vl",) if l < 2 else ()) + (("avx512bw",) if esize < 4 else ())
            out.append(
                VSpec(
                    f"{name} {'xyz'[l]}mm {kind}",
                    "evex",
                    EVEX,
                    m,
                    op,
                    pp,
                    kind,
                    vl,
                    l,
                    w,
                    vl if align else 0,
                    reg=not nt,
                    esize=0 if nt else esize,
                    features=feats,
                )
            )
    return out


VSPECS: list[VSpec] = _legacy() + _vex() + _evex()


def vspecs_of(
    family: str, flags: frozenset[str] | None = None, where: Callable[[VSpec], bool] | None = None
) -> list[VSpec]:
    """The forms of a family whose CPU features are all in `flags` (None: all forms) and, if given,
    that `where` accepts."""
    return [
        s
        for s in VSPECS
        if s.family == family and (flags is None or set(s.features) <= flags) and (where is None or where(s))
    ]


# --------------------------------------------------------------------------------------------------
# Vector state
# --------------------------------------------------------------------------------------------------


def _wide(rng: Rng, bits: int = 512) -> int:
    r = rng.random()
    if r < 0.1:
        return 0
    if r < 0.2:
        return (1 << bits) - 1
    return rng.getrandbits(bits)


def vector_state(rng: Rng) -> VectorState:
    """Random ZMM0-31, k0-7, MXCSR, MMX registers and x87 TOP/tags (no x87 exception pending)."""
    vec = VectorState()
    vec.zmm = [_wide(rng) for _ in range(32)]
    vec.k = [_wide(rng, 64) for _ in range(8)]
    vec.mxcsr = MXCSR_DEFAULT if rng.random() < 0.6 else rng.getrandbits(16)
    vec.mm = [_wide(rng, 64) for _ in range(8)]
    vec.mm_hi = [rng.getrandbits(16) for _ in range(8)]
    vec.fsw = rng.getrandbits(3) << 11
    vec.ftw = rng.getrandbits(8)
    return vec


def _selection(draw: st.DrawFn, rng: Rng, nelem: int) -> int:
    kind = draw(st.sampled_from(("all", "none", "random", "random", "run", "one")))
    every = (1 << nelem) - 1
    if kind == "all":
        return every
    if kind == "none":
        return 0
    if kind == "one":
        return 1 << rng.randrange(nelem)
    if kind == "run":
        lo = rng.randrange(nelem)
        hi = rng.randrange(lo, nelem)
        return ((1 << (hi + 1)) - 1) & ~((1 << lo) - 1)
    return rng.getrandbits(nelem)


def _runs(sel: int, esize: int, nelem: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    start = -1
    for i in range(nelem + 1):
        on = i < nelem and sel >> i & 1
        if on and start < 0:
            start = i
        elif not on and start >= 0:
            out.append((start * esize, (i - start) * esize))
            start = -1
    return out


# --------------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------------


@dataclass
class _Enc:
    """The fields a case encodes, drawn first; `prefix` is built once the registers are known."""

    reg: int  # full register numbers (ModRM.reg with R/R'), 0-31
    rm: int  # register form: ModRM.rm with B (and EVEX.X); -1 for a memory form
    x: int  # SIB.index extension of a memory form (REX/VEX/EVEX.X)
    bbit: int  # REX/VEX/EVEX.B
    w: int
    l: int
    vvvv: int  # register number (0: 1111b encoded)
    aaa: int = 0
    z: int = 0
    b: int = 0
    vprime_bad: bool = False  # EVEX.V' encoded 0 with vvvv unused
    legacy_pfx: bytes = b""  # segment/67 prefixes before everything
    two_byte: bool = True  # VEX C5 where possible


def _vex_prefix(spec: VSpec, e: _Enc) -> bytes:
    r, x, b = e.reg >> 3 & 1, e.x, e.bbit
    vvvv = ~e.vvvv & 15
    if spec.enc == VEX:
        if e.two_byte and spec.opmap == 1 and not x and not b and not e.w:
            return bytes([0xC5, (1 - r) << 7 | vvvv << 3 | e.l << 2 | spec.pp])
        return bytes([0xC4, (1 - r) << 7 | (1 - x) << 6 | (1 - b) << 5 | spec.opmap,
                      e.w << 7 | vvvv << 3 | e.l << 2 | spec.pp])  # fmt: skip
    rprime = e.reg >> 4 & 1
    vprime = 0 if e.vprime_bad else (e.vvvv >> 4 & 1)
    xbit = e.x if e.rm < 0 else e.rm >> 4 & 1
    p0 = (1 - r) << 7 | (1 - xbit) << 6 | (1 - b) << 5 | (1 - rprime) << 4 | spec.opmap
    p1 = e.w << 7 | vvvv << 3 | 4 | spec.pp
    p2 = e.z << 7 | e.l << 5 | e.b << 4 | (1 - vprime) << 3 | e.aaa
    return bytes([0x62, p0, p1, p2])


@st.composite
def vector_case(draw: st.DrawFn, spec: VSpec, perturb: bool = True) -> Case:
    """One case of `spec`: encoding, operand placement, vector state, planned accesses (`perturb`: now
    and then a field the form does not use set anyway)."""
    rng = Rng(draw(st.integers(0, MASK64)))
    vec = vector_state(rng)
    gprs = [rng.reg() for _ in range(16)]
    rflags = rng.rflags() | (0x40000 if rng.random() < 0.15 else 0)  # AC now and then: #AC at CPL 3
    fs_base, gs_base = rng.seg_base(), rng.seg_base()
    seed = rng.getrandbits(32)
    tags: set[str] = {("legacy", "vex", "evex")[spec.enc]} | ({"vvvv"} if spec.vvvv else set())
    notes: list[str] = []
    patches: list[tuple[int, bytes]] = []

    # Register form or memory form; a masked/MASKMOV form is a register form with a memory target.
    if spec.kind in ("reg", "maskmov") or not spec.mem:
        mod = 3
    elif not spec.reg:
        mod = draw(st.sampled_from((0, 1, 2)))
    else:
        mod = draw(st.sampled_from((0, 0, 1, 1, 2, 2, 3)))
    if mod == 3:
        tags.add("reg-form")
    regs32 = spec.enc == EVEX
    reg = spec.group if spec.group is not None else rng.randrange(32 if regs32 else 16)
    if spec.enc == LEGACY and spec.group is None:
        reg = rng.randrange(16)
    w = spec.w if spec.w is not None else rng.randrange(2)
    l = spec.l
    vvvv = rng.randrange(32 if regs32 else 16) if spec.vvvv else 0
    e = _Enc(reg, -1, 0, 0, w, l, vvvv)
    # Perturb a field the form does not use, now and then: what the CPU does with it is compared.
    if perturb and spec.enc and draw(st.sampled_from((False,) * 9 + (True,))):
        what = draw(st.sampled_from(("l", "w", "vvvv", "b", "z", "ll3", "vprime")))
        if what == "l":
            e.l ^= 1
        elif what == "w":
            e.w ^= 1
        elif what == "vvvv" and not spec.vvvv:
            e.vvvv = rng.randrange(1, 16)
        elif spec.enc == EVEX and what == "b":
            e.b = 1
        elif spec.enc == EVEX and what == "z":
            e.z = 1
        elif spec.enc == EVEX and what == "ll3":
            e.l = 3
        elif spec.enc == EVEX and what == "vprime" and not spec.vvvv:
            e.vprime_bad = True
        else:
            what = ""
        if what:
            tags.add("perturbed")
            notes.append(f"perturbed {what}")
    if spec.enc == EVEX and spec.esize and "perturbed" not in tags:
        e.aaa = draw(st.sampled_from((0, 0, 0, 1, 2, 3, 4, 5, 6, 7)))
        e.z = 1 if e.aaa and spec.kind == "load" and rng.random() < 0.4 else 0
    e.two_byte = rng.random() < 0.7

    # Legacy prefixes: segment overrides and 67 in any order, the mandatory prefix among them (its
    # place does not matter), then REX directly before the escape.
    segs = [SEG_PREFIX[n] for n in draw(seg_choices)]
    asz = draw(st.sampled_from((False, False, False, True)))
    pfx = segs + ([0x67] if asz else [])
    if spec.enc == LEGACY and spec.pp:
        pfx.append(_PP_BYTE[spec.pp])
    rng.shuffle(pfx)
    seg = next((n for n in reversed([{0x64: "fs", 0x65: "gs"}.get(p) for p in pfx]) if n), None)
    last_seg = [p for p in pfx if p in SEG_PREFIX.values()][-1:]
    if seg is not None and last_seg and last_seg[0] not in (0x64, 0x65):
        tags.add("null-seg-last")  # 64-bit mode ignores it; Unicorn and Linux do not (see known.py)
    bits = 32 if asz else 64

    # ModRM.
    rm_field = draw(st.sampled_from((0, 1, 2, 3, 4, 4, 5, 5, 6, 7)))
    sib = None
    if mod != 3 and rm_field == 4:
        sib = (
            draw(st.integers(0, 3)) << 6
            | draw(st.integers(0, 7)) << 3
            | draw(st.sampled_from((0, 3, 4, 5, 5, 6, 7)))
        )
    xbit, bbit = rng.randrange(2), rng.randrange(2)
    e.bbit = bbit
    if mod == 3:
        e.rm = rm_field | bbit << 3 | (xbit << 4 if regs32 and not spec.gpr else 0)
    else:
        e.x = xbit
    rex = 0x40 | w << 3 | (reg >> 3 & 1) << 2 | e.x << 1 | bbit
    if spec.enc == LEGACY and (rex != 0x40 or rng.random() < 0.3):
        prefix = bytes(pfx) + bytes([rex])
    else:
        prefix = bytes(pfx)
    disp_len = (
        1
        if mod == 1
        else 4
        if mod == 2 or (mod == 0 and (rm_field == 5 or (sib is not None and sib & 7 == 5)))
        else 0
    )
    # EVEX disp8*N: these full-vector moves scale by the vector length as encoded (a perturbed L'L too).
    n_scale = 16 << min(e.l, 2) if spec.enc == EVEX else 1
    disp8 = rng.randint(-128, 127)
    disp = disp8 * n_scale if mod == 1 else rng.disp32() if disp_len else 0
    imm = bytes([rng.getrandbits(8)]) if spec.imm else b""
    modrm = mod << 6 | (reg & 7) << 3 | rm_field

    def encode(shape_disp: int) -> bytes:
        head = prefix if spec.enc == LEGACY else prefix + _vex_prefix(spec, e)
        body = (_ESCAPE[spec.opmap] if spec.enc == LEGACY else b"") + bytes([spec.opcode, modrm])
        if sib is not None:
            body += bytes([sib])
        if disp_len == 1:
            body += (shape_disp // n_scale).to_bytes(1, "little", signed=True)
        elif disp_len == 4:
            body += shape_disp.to_bytes(4, "little", signed=True)
        return head + body + imm

    length = len(encode(disp))
    assume(length <= 15)
    next_rip = CODE + length
    accesses: list[Access] = []
    sel_note = ""
    target = WINDOW

    size = spec.msize
    if mod != 3:
        shape = decode_shape(mod, rm_field, sib, e.x << 1 | bbit, disp, bits)
        if mod == 1:
            shape.free_disp = False
        if spec.enc == EVEX and mod == 1:
            shape.disp = disp
        target = _place(draw, rng, size, spec.align)
        if target + size > WINDOW + WINDOW_SIZE:
            tags.add("past-end")
        if spec.align and target % spec.align:
            tags.add("misaligned")
        seg_base = fs_base if seg == "fs" else gs_base if seg == "gs" else 0
        values = None
        for base_try in (seg_base, 0):
            off_t = (target - base_try) & MASK64
            if bits == 32 and off_t >> 32:
                continue
            values = solve(rng, shape, off_t & ((1 << bits) - 1), {}, gprs, next_rip)
            if values is not None:
                seg_base = base_try
                break
        assume(values is not None)
        assert values is not None
        if seg == "fs":
            fs_base = seg_base
        elif seg == "gs":
            gs_base = seg_base
        for r, v in values.items():
            gprs[r] = v & MASK64
        ea = effective_address(shape, dict(enumerate(gprs)), next_rip)
        assert (seg_base + ea) & MASK64 == target, (hex(seg_base), hex(ea), hex(target))
        code = encode(shape.disp)
        if spec.mxcsr:
            value = rng.getrandbits(16) | (rng.getrandbits(16) << 16 if rng.random() < 0.2 else 0)
            patches.append((target, value.to_bytes(4, "little")))
            if value >> 16:
                tags.add("mxcsr-reserved")
        accesses, sel_note = _plan(draw, rng, spec, e, vec, target)
    else:
        code = encode(disp)
        if spec.kind == "maskmov":
            target = _place(draw, rng, size, 0)
            if target + size > WINDOW + WINDOW_SIZE:
                tags.add("past-end")
            off = target - (fs_base if seg == "fs" else gs_base if seg == "gs" else 0)
            if bits == 32:
                assume(0 <= off < 1 << 32)
                gprs[7] = off | rng.upper() << 32
            else:
                gprs[7] = off & MASK64
            accesses, sel_note = _plan(draw, rng, spec, e, vec, target)
    # The hardware's exit is on the operand's page; a perturbed case or an empty mask has no plan.
    fault_gpa = first_mmio(accesses) if accesses else target
    if "perturbed" in tags:
        accesses = []
    if sel_note:
        notes.append(sel_note)
    return Case(
        form=spec.name,
        family=spec.family,
        code=code,
        gprs=tuple(v & MASK64 for v in gprs),
        rflags=rflags,
        fs_base=fs_base,
        gs_base=gs_base,
        seed=seed,
        patches=tuple(patches),
        fault_gpa=fault_gpa,
        accesses=tuple(accesses),
        addr_size=bits // 8,
        note="; ".join(notes),
        tags=frozenset(tags),
        vector=vec,
    )


def _place(draw: st.DrawFn, rng: Rng, size: int, align: int) -> int:
    """An address for `size` bytes in the window; "past" placements run into the page after it."""
    kind = draw(st.sampled_from(("aligned", "aligned", "aligned", "any", "cross", "edge", "past")))
    unit = max(align, 1) if align else min(size, 16)
    if kind == "aligned":
        off = rng.randrange(0, WINDOW_SIZE - size + 1, unit) if unit <= WINDOW_SIZE - size else 0
    elif kind == "cross" and size > 1:
        off = PAGE - rng.randint(1, size - 1)
    elif kind == "past" and size > 1:
        off = WINDOW_SIZE - rng.randint(1, size - 1)
    elif kind == "edge":
        off = rng.choice((0, WINDOW_SIZE - size))
    else:
        off = rng.randint(0, WINDOW_SIZE - size)
    return WINDOW + off


def _plan(
    draw: st.DrawFn, rng: Rng, spec: VSpec, e: _Enc, vec: VectorState, target: int
) -> tuple[list[Access], str]:
    """The data accesses of the move (setting up the mask it uses), and a note on the selection."""
    write = spec.kind in ("store", "mstore", "maskmov")
    if spec.kind in ("load", "store") and not (spec.enc == EVEX and e.aaa and spec.esize):
        return [Access(target, spec.msize, write)], ""
    if spec.kind == "maskmov":
        nbytes = spec.msize
        sel = _selection(draw, rng, nbytes)
        mask = rng.getrandbits(8 * nbytes)
        for n in range(nbytes):
            mask = mask & ~(0x80 << 8 * n) | (sel >> n & 1) << (8 * n + 7)
        if nbytes == 8:
            vec.mm[e.rm & 7] = mask
        else:
            vec.zmm[e.rm] = vec.zmm[e.rm] & ~((1 << 128) - 1) | mask
        parts = _runs(sel, 1, nbytes)
        return [Access(target + o, n, True) for o, n in parts], f"byte mask {sel:#x}"
    esize = spec.esize
    nelem = spec.msize // esize
    sel = _selection(draw, rng, nelem)
    if spec.enc == EVEX:
        vec.k[e.aaa] = vec.k[e.aaa] & ~((1 << nelem) - 1) | sel
        note = f"k{e.aaa} selects {sel:#x}" + (" (zeroing)" if e.z else "")
    else:
        mask = vec.zmm[e.vvvv]
        for n in range(nelem):
            top = 8 * esize * (n + 1) - 1
            mask = mask & ~(1 << top) | (sel >> n & 1) << top
        vec.zmm[e.vvvv] = mask
        note = f"vvvv mask selects {sel:#x}"
    return [Access(target + o, n, write) for o, n in _runs(sel, esize, nelem)], note


# --------------------------------------------------------------------------------------------------
# vmmio's tables, for coverage checks (every row is run by some generated case and some test row)
# --------------------------------------------------------------------------------------------------


def table_key(insn: Insn) -> tuple[object, ...]:
    """The row of the vector tables that decides what `insn` does."""
    f = fields(insn)
    if insn.encoding == Encoding.LEGACY:
        return ("legacy", insn.opmap, insn.opcode, f.pp, insn.mnemonic)
    if insn.encoding == Encoding.VEX:
        form = avx_moves.vex_form(insn, f)
        return ("vex", form.name, insn.opmap, insn.opcode, f.pp, f.w if "pmaskmov" in form.name else 0)
    return ("evex", insn.opmap, insn.opcode, f.pp, f.w)


def table_keys() -> set[tuple[object, ...]]:
    keys: set[tuple[object, ...]] = {("legacy", *k) for k in sse_moves.SSE_FORMS}
    for (m, op, pp), form in avx_moves.VEX_FORMS.items():
        keys.add(("vex", form.name, m, op, pp, 0))
    for (op, w), form in avx_moves._VPMASKMOV.items():
        keys.add(("vex", form.name, 2, op, 1, w))
    for form in avx_moves._MXCSR.values():
        keys.add(("vex", form.name, 1, 0xAE, 0, 0))
    keys |= {("evex", *k) for k in avx512_moves.EVEX_FORMS}
    return keys


def vector_cases(
    family: str, flags: frozenset[str] | None = None, where: Callable[[VSpec], bool] | None = None
) -> st.SearchStrategy[Case]:
    """Cases of one family, the form drawn uniformly among those the CPU (`flags`) has (and `where`
    accepts)."""
    pool = vspecs_of(family, flags, where)
    return st.sampled_from(pool).flatmap(vector_case)
