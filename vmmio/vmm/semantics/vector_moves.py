"""What each XMM/YMM move does, whatever its encoding: the legacy, VEX and EVEX modules check the CPU state
and the encoding, then run one of these.

The encoding decides two things, both taken from `VecFields` (`put`, `first_source`): a legacy write
merges into the register (bits above the operand keep their values) where a VEX/EVEX write zeroes
everything above the vector length; and an operation that combines a register with new data (MOVSS
between registers, MOVLPS/MOVHPS loads, PINSR*) takes that register from the destination in legacy
SSE and from VEX.vvvv otherwise.
"""

from __future__ import annotations

from collections.abc import Callable

from vmmio.vmm.semantics.context import Exec, Operand, Steps
from vmmio.vmm.semantics.vector import VecFields, aligned, load, ones, set_legacy, set_vex, store
from vmmio.x86.insn import Insn

QWORD = ones(8)
XMM = ones(16)

# What a form does once its checks passed: (Exec, Insn, its vector fields) -> steps.
Body = Callable[[Exec, Insn, VecFields], Steps]


def put(x: Exec, f: VecFields, n: int, value: int, nbytes: int = 16) -> None:
    """Write `nbytes` of vector register n by the encoding's rule (legacy merges, VEX/EVEX zero above)."""
    vec = x.vector()
    if f.encoding:
        set_vex(vec, n, value, nbytes)
    else:
        set_legacy(vec, n, value, nbytes)
    x.vector_changed()


def reg(x: Exec, n: int, nbytes: int = 16) -> int:
    return x.vector().zmm[n] & ones(nbytes)


def first_source(x: Exec, f: VecFields, dst: int) -> int:
    """The register a merging operation starts from: the destination (legacy) or VEX.vvvv (128 bits)."""
    return reg(x, f.vvvv if f.encoding else dst)


def source(x: Exec, i: Insn, f: VecFields, nbytes: int, align: int = 0) -> Operand:
    """The r/m source of `nbytes`: a register, or a memory read (alignment-checked on `align` bytes)."""
    if i.mem is None:
        return reg(x, f.rm, nbytes)
    if align:
        yield from aligned(x, i, align)
    return (yield from load(x, i, nbytes))


def to_rm(x: Exec, i: Insn, f: VecFields, nbytes: int, value: int, align: int = 0) -> Steps:
    """Write the r/m destination: a memory store, or a register by the encoding's rule."""
    if i.mem is None:
        put(x, f, f.rm, value, nbytes)
        return
    if align:
        yield from aligned(x, i, align)
    yield from store(x, i, nbytes, value)


# -- whole vectors -------------------------------------------------------------------------------------


def move_load(x: Exec, i: Insn, f: VecFields, nbytes: int, align: bool) -> Steps:
    """MOVAPS/MOVUPS/MOVDQA/MOVDQU/LDDQU/MOVNTDQA xmm, xmm/m (and their VEX forms): reg <- r/m."""
    value = yield from source(x, i, f, nbytes, nbytes if align else 0)
    put(x, f, f.reg, value, nbytes)


def move_store(x: Exec, i: Insn, f: VecFields, nbytes: int, align: bool) -> Steps:
    """MOVAPS/MOVUPS/MOVDQA/MOVDQU/MOVNT* xmm/m, xmm: r/m <- reg."""
    yield from to_rm(x, i, f, nbytes, reg(x, f.reg, nbytes), nbytes if align else 0)


# -- scalars and halves --------------------------------------------------------------------------------


def scalar_load(x: Exec, i: Insn, f: VecFields, esize: int) -> Steps:
    """MOVSS/MOVSD xmm, xmm/m: from memory zero-extended to 128 bits; from a register only the low
    element replaced (in the destination, or for VEX in vvvv's copy)."""
    if i.mem is None:
        value = (first_source(x, f, f.reg) & ~ones(esize)) | reg(x, f.rm, esize)
    else:
        value = yield from load(x, i, esize)
    put(x, f, f.reg, value)


def scalar_store(x: Exec, i: Insn, f: VecFields, esize: int) -> Steps:
    """MOVSS/MOVSD xmm/m, xmm: the low element to memory, or merged into the r/m register."""
    if i.mem is None:
        put(x, f, f.rm, (first_source(x, f, f.rm) & ~ones(esize)) | reg(x, f.reg, esize))
    else:
        yield from store(x, i, esize, reg(x, f.reg, esize))


def half_load(x: Exec, i: Insn, f: VecFields, high: bool) -> Steps:
    """MOVLPS/MOVLPD (low) and MOVHPS/MOVHPD (high) xmm, m64: the other qword is kept (VEX: vvvv's)."""
    value = yield from load(x, i, 8)
    keep = first_source(x, f, f.reg)
    put(x, f, f.reg, (keep & QWORD) | value << 64 if high else (keep & ~QWORD & XMM) | value)


def half_store(x: Exec, i: Insn, f: VecFields, high: bool) -> Steps:
    """MOVLPS/MOVLPD/MOVHPS/MOVHPD m64, xmm."""
    yield from store(x, i, 8, reg(x, f.reg) >> (64 if high else 0))


def movhlps(x: Exec, f: VecFields) -> None:
    """MOVHLPS xmm1, xmm2 (0F 12 with a register): the high qword of xmm2 to the low one of xmm1."""
    put(x, f, f.reg, (first_source(x, f, f.reg) & ~QWORD & XMM) | reg(x, f.rm) >> 64)


def movlhps(x: Exec, f: VecFields) -> None:
    """MOVLHPS xmm1, xmm2 (0F 16 with a register): the low qword of xmm2 to the high one of xmm1."""
    put(x, f, f.reg, (first_source(x, f, f.reg) & QWORD) | reg(x, f.rm, 8) << 64)


def zero_extend_load(x: Exec, i: Insn, f: VecFields, nbytes: int, from_gpr: bool) -> Steps:
    """MOVD/MOVQ xmm, r/m32/64 (from a GPR) and MOVQ xmm, xmm/m64 (F3 0F 7E): zero-extended to 128."""
    if i.mem is None:
        value = x.get(f.rm & 15, nbytes) if from_gpr else reg(x, f.rm, nbytes)
    else:
        value = yield from load(x, i, nbytes)
    put(x, f, f.reg, value)


def low_store(x: Exec, i: Insn, f: VecFields, nbytes: int, to_gpr: bool) -> Steps:
    """MOVD/MOVQ r/m32/64, xmm (to a GPR: a 32-bit write zero-extends) and MOVQ xmm/m64, xmm (66 0F D6:
    to a register, zero-extended to 128 bits)."""
    value = reg(x, f.reg, nbytes)
    if i.mem is not None:
        yield from store(x, i, nbytes, value)
    elif to_gpr:
        x.set(f.rm & 15, nbytes, value)
    else:
        put(x, f, f.rm, value)


# -- duplicates ------------------------------------------------------------------------------------------

_DUP = {"movddup": (0, 0), "movsldup": (0, 2), "movshdup": (1, 3)}  # dwords/qwords copied per lane


def duplicate(x: Exec, i: Insn, f: VecFields, kind: str, nbytes: int) -> Steps:
    """MOVDDUP (qword 0 of each 128-bit lane twice; from memory only the qwords used are read: 8 bytes
    at 128 bits), MOVSLDUP (dwords 0 and 2, each twice), MOVSHDUP (dwords 1 and 3). The legacy m128 forms
    need 16-byte alignment, as legacy SSE operations do (only the named unaligned moves do not)."""
    ddup = kind == "movddup"
    read = 8 if ddup and nbytes == 16 else nbytes
    src = yield from source(x, i, f, read, 16 if read == 16 and not f.encoding else 0)
    a, b = _DUP[kind]
    out = 0
    for lane in range(0, 8 * nbytes, 128):
        chunk = src >> lane
        if ddup:
            q = chunk & QWORD
            out |= (q | q << 64) << lane
        else:
            d0, d2 = chunk >> 32 * a & 0xFFFF_FFFF, chunk >> 32 * b & 0xFFFF_FFFF
            out |= (d0 | d0 << 32 | d2 << 64 | d2 << 96) << lane
    put(x, f, f.reg, out, nbytes)


# -- elements --------------------------------------------------------------------------------------------


def extract(x: Exec, i: Insn, f: VecFields, esize: int) -> Steps:
    """PEXTRB/PEXTRW/PEXTRD/PEXTRQ/EXTRACTPS r/m, xmm, imm8: element imm8 (modulo the count) to memory,
    or to a GPR zero-extended (a 32-bit write below qwords)."""
    index = i.imm & (16 // esize - 1)
    value = reg(x, f.reg) >> (8 * esize * index) & ones(esize)
    if i.mem is None:
        x.set(f.rm & 15, max(esize, 4), value)
    else:
        yield from store(x, i, esize, value)


def insert(x: Exec, i: Insn, f: VecFields, esize: int) -> Steps:
    """PINSRB/PINSRW/PINSRD/PINSRQ xmm, r/m, imm8: element imm8 replaced by the source's low element."""
    if i.mem is None:
        value = x.get(f.rm & 15, max(esize, 4)) & ones(esize)
    else:
        value = yield from load(x, i, esize)
    shift = 8 * esize * (i.imm & (16 // esize - 1))
    keep = first_source(x, f, f.reg)
    put(x, f, f.reg, (keep & ~(ones(esize) << shift)) | value << shift)


def broadcast(x: Exec, i: Insn, f: VecFields, esize: int) -> Steps:
    """VBROADCAST*/VPBROADCAST*: the source's low `esize` bytes (a 16-byte one for the 128-bit forms)
    in every element of the vector."""
    value = yield from source(x, i, f, esize)
    out = 0
    for at in range(0, f.vl, esize):
        out |= value << (8 * at)
    put(x, f, f.reg, out, f.vl)


__all__ = [
    "Body",
    "broadcast",
    "duplicate",
    "extract",
    "first_source",
    "half_load",
    "half_store",
    "insert",
    "low_store",
    "move_load",
    "move_store",
    "movhlps",
    "movlhps",
    "put",
    "reg",
    "scalar_load",
    "scalar_store",
    "source",
    "to_rm",
    "zero_extend_load",
]
