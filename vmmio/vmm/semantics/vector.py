"""Vector registers, VEX/EVEX fields and the CPU-state checks shared by the MMX/SSE/AVX/AVX-512 moves.

The decoder's `Insn` keeps what every instruction needs; the VEX/EVEX payload the moves also need
(pp, W, vvvv, L'L, aaa, z, b, R', X) is re-read from `insn.raw` here, as `vmmio.x86.format` does for its
text. Register writes follow SDM vol. 1, 14.1.3 and 15.5: a legacy SSE write of XMMn leaves bits 511:128
alone, a VEX or EVEX write zeroes everything above its vector length. The checks follow the exception
classes of SDM vol. 2, 2.5-2.8 (#UD before #NM, both before any memory access).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from vmmio.vmm.semantics.context import ALIGN_CHECK, NO_AC, READ, WRITE, Exec, Operand, Steps
from vmmio.x86.faults import MF, NM, UD, GuestFault
from vmmio.x86.insn import Encoding, Insn
from vmmio.x86.regs import MASK, Seg
from vmmio.x86.state import (
    CR0_EM,
    CR0_TS,
    CR4_OSFXSR,
    CR4_OSXSAVE,
    FSW_ES,
    FSW_TOP,
    XCR0_AVX,
    XCR0_AVX512,
    XCR0_SSE,
    VectorState,
)

NP, P66, PF3, PF2 = range(4)  # mandatory-prefix index, as VEX/EVEX.pp encode it
_PP_OF_REP = {0xF3: PF3, 0xF2: PF2}
_SKIP = frozenset({0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x67})  # may precede a VEX/EVEX prefix
_SKIP_64 = _SKIP | frozenset(range(0x40, 0x50))  # ... and a REX that another prefix made stale
_DS, _FS = int(Seg.DS), int(Seg.FS)


def ones(nbytes: int) -> int:
    """A mask of `nbytes` bytes."""
    return (1 << (8 * nbytes)) - 1


@dataclass(frozen=True, slots=True)
class VecFields:
    """The operand fields of one vector instruction, whatever its encoding."""

    encoding: Encoding
    pp: int  # mandatory prefix: NP, P66, PF3, PF2 (legacy: the last F2/F3, else 66)
    w: int  # REX.W / VEX.W / EVEX.W
    vl: int  # vector length in bytes: 16 (legacy, L0), 32 (L1), 64 (EVEX L'L 2)
    ll: int  # VEX.L or EVEX.L'L as encoded (3 is reserved)
    reg: int  # ModRM.reg register, with REX/VEX.R and EVEX.R'
    rm: int  # ModRM.rm register of a register form, with REX/VEX.B and EVEX.X; -1 for memory forms
    vvvv: int  # VEX/EVEX.vvvv (with EVEX.V'), not inverted: 0 is "unused" (1111b encoded)
    aaa: int = 0  # EVEX opmask register (0: no masking)
    z: int = 0  # EVEX zeroing-masking
    b: int = 0  # EVEX.b (broadcast / rounding control)


def fields(insn: Insn) -> VecFields:
    """The vector fields of `insn` (cached by its bytes: Insn records are shared and immutable)."""
    i = insn
    return _fields(i.raw, i.mode, i.encoding, i.rep, i.opsize_prefix, i.rex, i.reg, i.rm)


@lru_cache(maxsize=4096)
def _fields(
    raw: bytes, mode: int, encoding: Encoding, rep: int, osz: bool, rex: int, reg: int, rm: int
) -> VecFields:
    if encoding == Encoding.LEGACY:
        pp = _PP_OF_REP.get(rep, P66 if osz else NP)
        return VecFields(encoding, pp, rex >> 3 & 1, 16, 0, reg, rm, 0)
    i = 0
    skip = _SKIP_64 if mode == 64 else _SKIP
    while raw[i] in skip:
        i += 1
    lead, p0 = raw[i], raw[i + 1]
    if lead == 0xC5:
        w, p1 = 0, p0
    else:
        p1 = raw[i + 2]
        w = p1 >> 7
    vvvv = ~p1 >> 3 & 15
    if lead != 0x62:
        ll = p1 >> 2 & 1
        if mode != 64:
            vvvv &= 7
        return VecFields(encoding, p1 & 3, w, 16 << ll, ll, reg, rm, vvvv)
    p2 = raw[i + 3]
    ll = p2 >> 5 & 3
    if mode == 64:
        vvvv |= 0 if p2 & 8 else 16
        reg |= 0 if p0 & 0x10 else 16
        if rm >= 0:
            rm |= 0 if p0 & 0x40 else 16
    else:
        vvvv &= 7
    return VecFields(encoding, p1 & 3, w, 16 << min(ll, 2), ll, reg, rm, vvvv, p2 & 7, p2 >> 7, p2 >> 4 & 1)


# -- CPU state checks --------------------------------------------------------------------------------


def check_sse(x: Exec, feature: str) -> None:
    """Legacy SSE: #UD with CR0.EM, without CR4.OSFXSR or the CPUID feature; then #NM with CR0.TS."""
    ctl = x.ctl
    if ctl.cr0 & CR0_EM or not ctl.cr4 & CR4_OSFXSR:
        raise GuestFault(UD)
    x.require(feature)
    if ctl.cr0 & CR0_TS:
        raise GuestFault(NM)


# What an MMX instruction that faults on its memory access leaves of its x87 effect (host CPU): a load
# nothing; a store (it read the MMX register) TOP = 0 with the tags unchanged; MASKMOVQ TOP = 0 and
# all tags valid.
MMX_FAULT_NOTHING, MMX_FAULT_TOP, MMX_FAULT_ALL = range(3)


def check_mmx(x: Exec, feature: str = "mmx", on_fault: int = MMX_FAULT_NOTHING) -> VectorState:
    """MMX registers (also the SSE-era MMX forms): #UD with CR0.EM or without the feature, #NM with
    CR0.TS, #MF with an x87 exception pending (FSW.ES). Then the effect every MMX instruction has on the
    x87 state it aliases: TOP = 0 and all tags valid, partly kept if it then faults (`on_fault`).
    Returns the vector state."""
    ctl = x.ctl
    if ctl.cr0 & CR0_EM:
        raise GuestFault(UD)
    x.require(feature)
    if ctl.cr0 & CR0_TS:
        raise GuestFault(NM)
    vec = x.vector()
    if vec.fsw & FSW_ES:
        raise GuestFault(MF)
    if on_fault != MMX_FAULT_NOTHING:
        kept = vec.copy()
        kept.fsw &= ~FSW_TOP
        if on_fault == MMX_FAULT_ALL:
            kept.ftw = 0xFF
        x.faulted_vec = kept
    vec.fsw &= ~FSW_TOP
    vec.ftw = 0xFF
    x.vector_changed()
    return vec


def check_vex(x: Exec, feature: str) -> None:
    """VEX: #UD without CR4.OSXSAVE, XCR0.SSE|AVX or the CPUID feature; then #NM with CR0.TS (CR0.EM and
    CR4.OSFXSR do not matter)."""
    ctl = x.ctl
    if not ctl.cr4 & CR4_OSXSAVE or ctl.xcr0 & (XCR0_SSE | XCR0_AVX) != XCR0_SSE | XCR0_AVX:
        raise GuestFault(UD)
    x.require(feature)
    if ctl.cr0 & CR0_TS:
        raise GuestFault(NM)


_EVEX_XCR0 = XCR0_SSE | XCR0_AVX | XCR0_AVX512


def check_evex(x: Exec, f: VecFields, bw: bool = False) -> None:
    """EVEX: #UD without CR4.OSXSAVE or the XCR0 SSE/AVX/opmask/ZMM components, without AVX512F (and
    AVX512VL below 512 bits, AVX512BW for byte/word elements), with the reserved L'L = 3, or with
    vvvv/V' naming a register the move has no use for; then #NM with CR0.TS."""
    ctl = x.ctl
    if not ctl.cr4 & CR4_OSXSAVE or ctl.xcr0 & _EVEX_XCR0 != _EVEX_XCR0 or f.ll == 3 or f.vvvv:
        raise GuestFault(UD)
    x.require("avx512f")
    if f.vl < 64:
        x.require("avx512vl")
    if bw:
        x.require("avx512bw")
    if ctl.cr0 & CR0_TS:
        raise GuestFault(NM)


# -- registers ------------------------------------------------------------------------------------------


def set_legacy(vec: VectorState, n: int, value: int, nbytes: int = 16) -> None:
    """A legacy SSE write of the low `nbytes` of XMMn: bits above them keep their values (up to 511)."""
    m = ones(nbytes)
    vec.zmm[n] = (vec.zmm[n] & ~m) | (value & m)


def set_vex(vec: VectorState, n: int, value: int, vl: int) -> None:
    """A VEX/EVEX write of `vl` bytes of ZMMn: everything above the vector length becomes 0."""
    vec.zmm[n] = value & ones(vl)


def set_mm(vec: VectorState, n: int, value: int) -> None:
    """An MMX register write: mmN is bits 63:0 of x87 register RN, whose bits 79:64 become ones."""
    vec.mm[n & 7] = value & MASK[8]
    vec.mm_hi[n & 7] = 0xFFFF


def blend(old: int, new: int, sel: int, esize: int, nelem: int, zeroing: int) -> int:
    """Element i of `new` where bit i of `sel` is set, else of `old` (or 0 with zeroing-masking)."""
    keep = 0 if zeroing else old
    m = ones(esize)
    out = 0
    for i in range(nelem):
        shift = 8 * esize * i
        out |= ((new if sel >> i & 1 else keep) >> shift & m) << shift
    return out


def opmask(vec: VectorState, f: VecFields, nelem: int) -> int:
    """The elements EVEX.aaa selects: kN's low `nelem` bits, or all of them for k0 (no masking)."""
    every = (1 << nelem) - 1
    return vec.k[f.aaa] & every if f.aaa else every


# -- the memory operand ------------------------------------------------------------------------------


def ea(x: Exec, i: Insn) -> tuple[int, int]:
    """(segment, offset) of the instruction's memory operand."""
    mem = i.mem
    assert mem is not None
    return mem.seg, x.ea()


def _no_ac(nbytes: int) -> int:
    # The CPU checks alignment (#AC) for memory operands of up to 8 bytes only (host CPU; SDM vol. 2,
    # exception types 4 and 5: "an unaligned memory reference of 8 Bytes or less").
    return NO_AC if nbytes > 8 else 0


def load(x: Exec, i: Insn, nbytes: int) -> Operand:
    """Read `nbytes` of the memory operand (one access: the kernel cuts it into requests)."""
    seg, off = ea(x, i)
    return (yield (READ | _no_ac(nbytes), seg, off, nbytes, 0))


def store(x: Exec, i: Insn, nbytes: int, value: int) -> Steps:
    """Write `nbytes` of the memory operand."""
    seg, off = ea(x, i)
    yield (WRITE | _no_ac(nbytes), seg, off, nbytes, value & ones(nbytes))


def aligned(x: Exec, i: Insn, nbytes: int) -> Steps:
    """#GP(0) unless the memory operand is aligned on `nbytes` (MOVAPS, MOVDQA, MOVNT*, ...)."""
    seg, off = ea(x, i)
    yield (ALIGN_CHECK, seg, off, nbytes, 0)


def ds_rdi(x: Exec, i: Insn) -> tuple[int, int]:
    """DS:rDI at the address size, as MASKMOVQ/MASKMOVDQU address it: a segment override applies (in
    64-bit mode only FS and GS change anything)."""
    seg = i.seg_override
    if seg < 0 or (i.mode == 64 and seg < _FS):
        seg = _DS
    return seg, x.get(7, i.addr_size)


__all__ = [
    "MMX_FAULT_ALL",
    "MMX_FAULT_NOTHING",
    "MMX_FAULT_TOP",
    "NP",
    "P66",
    "PF2",
    "PF3",
    "VecFields",
    "aligned",
    "blend",
    "check_evex",
    "check_mmx",
    "check_sse",
    "check_vex",
    "ds_rdi",
    "ea",
    "fields",
    "load",
    "ones",
    "opmask",
    "set_legacy",
    "set_mm",
    "set_vex",
    "store",
]
