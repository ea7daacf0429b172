"""MMX and SSE-SSE4.1 moves (legacy encodings), MASKMOVQ/MASKMOVDQU, LDMXCSR/STMXCSR.

One table row per (map, opcode, mandatory prefix, decoder mnemonic) names the CPUID feature, the checks
and the body. Legacy SSE is #UD with CR0.EM or without CR4.OSFXSR; the forms on MMX registers only with
CR0.EM (SDM vol. 3, 22.25), then they raise #MF for a pending x87 exception and set the x87 TOP and tags
as every MMX instruction does; all are #NM with CR0.TS, before any access. Aligned forms (MOVAPS,
MOVDQA, MOVNTPS/PD/DQ, MOVNTDQA, and MOVSLDUP/MOVSHDUP, m128 operations of legacy SSE) raise #GP(0) for a
memory operand that is not 16-byte aligned, before anything else about it; no 16-byte operand is
checked for #AC, 8 bytes and less are (host CPU).
"""

from __future__ import annotations

from dataclasses import dataclass

from vmmio.vmm.semantics import masked
from vmmio.vmm.semantics.context import TOUCH, Exec, Steps
from vmmio.vmm.semantics.registry import ANY_REG, emulates
from vmmio.vmm.semantics.vector import (
    MMX_FAULT_ALL,
    MMX_FAULT_NOTHING,
    MMX_FAULT_TOP,
    NP,
    P66,
    PF2,
    PF3,
    VecFields,
    check_mmx,
    check_sse,
    ds_rdi,
    fields,
    load,
    ones,
    set_legacy,
    set_mm,
    store,
)
from vmmio.vmm.semantics.vector_moves import (
    Body,
    duplicate,
    extract,
    half_load,
    half_store,
    insert,
    low_store,
    move_load,
    move_store,
    movhlps,
    movlhps,
    reg,
    scalar_load,
    scalar_store,
    zero_extend_load,
)
from vmmio.x86.faults import GP, GuestFault
from vmmio.x86.insn import Insn, OpMap

MXCSR_MASK = 0xFFFF  # MXCSR bits LDMXCSR accepts (DAZ included, as FXSAVE reports on every SSE2 CPU)
SSE, MMX, BOTH = "sse", "mmx", "sse+mmx"  # the checks: legacy SSE, MMX registers, both (MOVQ2DQ)


@dataclass(frozen=True, slots=True)
class SseForm:
    feature: str
    body: Body
    checks: str = SSE
    on_fault: int = MMX_FAULT_NOTHING  # MMX forms: what of the x87 effect stays when the access faults


# -- XMM forms -----------------------------------------------------------------------------------------


def _load(nbytes: int = 16, align: bool = False) -> Body:
    return lambda x, i, f: move_load(x, i, f, nbytes, align)


def _store(nbytes: int = 16, align: bool = False) -> Body:
    return lambda x, i, f: move_store(x, i, f, nbytes, align)


def _movhlps_or_movlps(x: Exec, i: Insn, f: VecFields) -> Steps:
    if i.mem is None:
        movhlps(x, f)
        return
    yield from half_load(x, i, f, False)


def _movlhps_or_movhps(x: Exec, i: Insn, f: VecFields) -> Steps:
    if i.mem is None:
        movlhps(x, f)
        return
    yield from half_load(x, i, f, True)


# -- MMX register forms ------------------------------------------------------------------------------


def _mm(x: Exec, n: int) -> int:
    return x.vector().mm[n & 7]


def _mm_load(nbytes: int, from_gpr: bool) -> Body:
    """MOVD/MOVQ mm, r/m32/64 and MOVQ mm, mm/m64: zero-extended to 64 bits."""

    def body(x: Exec, i: Insn, f: VecFields) -> Steps:
        if i.mem is not None:
            value = yield from load(x, i, nbytes)
        else:
            value = x.get(f.rm, nbytes) if from_gpr else _mm(x, f.rm)
        set_mm(x.vector(), f.reg, value)

    return body


def _mm_store(nbytes: int, to_gpr: bool) -> Body:
    """MOVD/MOVQ r/m32/64, mm, MOVQ mm/m64, mm and MOVNTQ m64, mm."""

    def body(x: Exec, i: Insn, f: VecFields) -> Steps:
        value = _mm(x, f.reg) & ones(nbytes)
        if i.mem is not None:
            yield from store(x, i, nbytes, value)
        elif to_gpr:
            x.set(f.rm, nbytes, value)
        else:
            set_mm(x.vector(), f.rm, value)

    return body


def _pinsrw_mm(x: Exec, i: Insn, f: VecFields) -> Steps:
    """PINSRW mm, r32/m16, imm8: word imm8 & 3 replaced."""
    value = (yield from load(x, i, 2)) if i.mem is not None else x.get(f.rm, 2)
    shift = 16 * (i.imm & 3)
    set_mm(x.vector(), f.reg, (_mm(x, f.reg) & ~(0xFFFF << shift)) | value << shift)


def _movq2dq(x: Exec, i: Insn, f: VecFields) -> Steps:
    """MOVQ2DQ xmm, mm: zero-extended to 128 bits."""
    set_legacy(x.vector(), f.reg, _mm(x, f.rm))
    yield from ()


def _movdq2q(x: Exec, i: Insn, f: VecFields) -> Steps:
    """MOVDQ2Q mm, xmm: the low qword."""
    set_mm(x.vector(), f.reg, reg(x, f.rm, 8))
    yield from ()


# -- byte-masked stores --------------------------------------------------------------------------------


def mask_move(x: Exec, i: Insn, data: int, mask_bytes: int, nbytes: int) -> Steps:
    """MASKMOVQ/MASKMOVDQU: the bytes of `data` whose mask byte has its sign bit set, to DS:rDI.

    The host CPU checks the whole operand as qword stores whatever the mask, the high qword first
    (MASKMOVDQU at 0x1ffc over a missing page: #PF at 0x2004; with an all-zero mask too), with #AC for
    a rDI that is not a multiple of 8; the kernel probes those qwords in that order. Then the selected
    bytes are written as masked runs (`masked`), which are not checked for #AC again.
    """
    seg, off = ds_rdi(x, i)
    wrap = (1 << (8 * i.addr_size)) - 1
    for half in range(nbytes - 8, -1, -8):
        yield (TOUCH, seg, (off + half) & wrap, 8, 1)
    sel = 0
    for n in range(nbytes):
        sel |= (mask_bytes >> (8 * n + 7) & 1) << n
    yield from masked.write(seg, off, i.addr_size, masked.byte_runs(sel, nbytes), data)


def _maskmovq(x: Exec, i: Insn, f: VecFields) -> Steps:
    yield from mask_move(x, i, _mm(x, f.reg), _mm(x, f.rm), 8)


def _maskmovdqu(x: Exec, i: Insn, f: VecFields) -> Steps:
    yield from mask_move(x, i, reg(x, f.reg), reg(x, f.rm), 16)


# -- MXCSR ---------------------------------------------------------------------------------------------


def ldmxcsr(x: Exec, i: Insn) -> Steps:
    """LDMXCSR/VLDMXCSR m32: #GP(0) for a reserved bit, after the read."""
    value = yield from load(x, i, 4)
    if value & ~MXCSR_MASK:
        raise GuestFault(GP, 0)
    x.vector().mxcsr = value
    x.vector_changed()


def stmxcsr(x: Exec, i: Insn) -> Steps:
    yield from store(x, i, 4, x.vector().mxcsr)


# -- the table ------------------------------------------------------------------------------------------

M1, M2, M3 = OpMap.M0F, OpMap.M0F38, OpMap.M0F3A
S = SseForm
TOP, ALL = MMX_FAULT_TOP, MMX_FAULT_ALL
# (map, opcode, mandatory prefix, decoder mnemonic) -> form. The prefix is the decoder's choice (the last
# F2/F3, else 66); the mnemonic tells MOVLPS from MOVHLPS and MOVD from MOVQ (REX.W).
SSE_FORMS: dict[tuple[int, int, int, str], SseForm] = {
    (M1, 0x10, NP, "movups"): S("sse", _load()),
    (M1, 0x10, P66, "movupd"): S("sse2", _load()),
    (M1, 0x10, PF3, "movss"): S("sse", lambda x, i, f: scalar_load(x, i, f, 4)),
    (M1, 0x10, PF2, "movsd"): S("sse2", lambda x, i, f: scalar_load(x, i, f, 8)),
    (M1, 0x11, NP, "movups"): S("sse", _store()),
    (M1, 0x11, P66, "movupd"): S("sse2", _store()),
    (M1, 0x11, PF3, "movss"): S("sse", lambda x, i, f: scalar_store(x, i, f, 4)),
    (M1, 0x11, PF2, "movsd"): S("sse2", lambda x, i, f: scalar_store(x, i, f, 8)),
    (M1, 0x12, NP, "movlps"): S("sse", _movhlps_or_movlps),
    (M1, 0x12, NP, "movhlps"): S("sse", _movhlps_or_movlps),
    (M1, 0x12, P66, "movlpd"): S("sse2", lambda x, i, f: half_load(x, i, f, False)),
    (M1, 0x12, PF3, "movsldup"): S("sse3", lambda x, i, f: duplicate(x, i, f, "movsldup", 16)),
    (M1, 0x12, PF2, "movddup"): S("sse3", lambda x, i, f: duplicate(x, i, f, "movddup", 16)),
    (M1, 0x13, NP, "movlps"): S("sse", lambda x, i, f: half_store(x, i, f, False)),
    (M1, 0x13, P66, "movlpd"): S("sse2", lambda x, i, f: half_store(x, i, f, False)),
    (M1, 0x16, NP, "movhps"): S("sse", _movlhps_or_movhps),
    (M1, 0x16, NP, "movlhps"): S("sse", _movlhps_or_movhps),
    (M1, 0x16, P66, "movhpd"): S("sse2", lambda x, i, f: half_load(x, i, f, True)),
    (M1, 0x16, PF3, "movshdup"): S("sse3", lambda x, i, f: duplicate(x, i, f, "movshdup", 16)),
    (M1, 0x17, NP, "movhps"): S("sse", lambda x, i, f: half_store(x, i, f, True)),
    (M1, 0x17, P66, "movhpd"): S("sse2", lambda x, i, f: half_store(x, i, f, True)),
    (M1, 0x28, NP, "movaps"): S("sse", _load(align=True)),
    (M1, 0x28, P66, "movapd"): S("sse2", _load(align=True)),
    (M1, 0x29, NP, "movaps"): S("sse", _store(align=True)),
    (M1, 0x29, P66, "movapd"): S("sse2", _store(align=True)),
    (M1, 0x2B, NP, "movntps"): S("sse", _store(align=True)),
    (M1, 0x2B, P66, "movntpd"): S("sse2", _store(align=True)),
    (M1, 0x6E, NP, "movd"): S("mmx", _mm_load(4, True), MMX),
    (M1, 0x6E, NP, "movq"): S("mmx", _mm_load(8, True), MMX),
    (M1, 0x6E, P66, "movd"): S("sse2", lambda x, i, f: zero_extend_load(x, i, f, 4, True)),
    (M1, 0x6E, P66, "movq"): S("sse2", lambda x, i, f: zero_extend_load(x, i, f, 8, True)),
    (M1, 0x6F, NP, "movq"): S("mmx", _mm_load(8, False), MMX),
    (M1, 0x6F, P66, "movdqa"): S("sse2", _load(align=True)),
    (M1, 0x6F, PF3, "movdqu"): S("sse2", _load()),
    (M1, 0x7E, NP, "movd"): S("mmx", _mm_store(4, True), MMX, TOP),
    (M1, 0x7E, NP, "movq"): S("mmx", _mm_store(8, True), MMX, TOP),
    (M1, 0x7E, P66, "movd"): S("sse2", lambda x, i, f: low_store(x, i, f, 4, True)),
    (M1, 0x7E, P66, "movq"): S("sse2", lambda x, i, f: low_store(x, i, f, 8, True)),
    (M1, 0x7E, PF3, "movq"): S("sse2", lambda x, i, f: zero_extend_load(x, i, f, 8, False)),
    (M1, 0x7F, NP, "movq"): S("mmx", _mm_store(8, False), MMX, TOP),
    (M1, 0x7F, P66, "movdqa"): S("sse2", _store(align=True)),
    (M1, 0x7F, PF3, "movdqu"): S("sse2", _store()),
    (M1, 0xAE, NP, "ldmxcsr"): S("sse", lambda x, i, f: ldmxcsr(x, i)),
    (M1, 0xAE, NP, "stmxcsr"): S("sse", lambda x, i, f: stmxcsr(x, i)),
    (M1, 0xC4, NP, "pinsrw"): S("sse", _pinsrw_mm, MMX),
    (M1, 0xC4, P66, "pinsrw"): S("sse2", lambda x, i, f: insert(x, i, f, 2)),
    (M1, 0xD6, P66, "movq"): S("sse2", lambda x, i, f: low_store(x, i, f, 8, False)),
    (M1, 0xD6, PF3, "movq2dq"): S("sse2", _movq2dq, BOTH),
    (M1, 0xD6, PF2, "movdq2q"): S("sse2", _movdq2q, BOTH),
    (M1, 0xE7, NP, "movntq"): S("sse", _mm_store(8, False), MMX, TOP),
    (M1, 0xE7, P66, "movntdq"): S("sse2", _store(align=True)),
    (M1, 0xF0, PF2, "lddqu"): S("sse3", _load()),
    (M1, 0xF7, NP, "maskmovq"): S("sse", _maskmovq, MMX, ALL),
    (M1, 0xF7, P66, "maskmovdqu"): S("sse2", _maskmovdqu),
    (M2, 0x2A, P66, "movntdqa"): S("sse4_1", _load(align=True)),
    (M3, 0x14, P66, "pextrb"): S("sse4_1", lambda x, i, f: extract(x, i, f, 1)),
    (M3, 0x15, P66, "pextrw"): S("sse4_1", lambda x, i, f: extract(x, i, f, 2)),
    (M3, 0x16, P66, "pextrd"): S("sse4_1", lambda x, i, f: extract(x, i, f, 4)),
    (M3, 0x16, P66, "pextrq"): S("sse4_1", lambda x, i, f: extract(x, i, f, 8)),
    (M3, 0x17, P66, "extractps"): S("sse4_1", lambda x, i, f: extract(x, i, f, 4)),
    (M3, 0x20, P66, "pinsrb"): S("sse4_1", lambda x, i, f: insert(x, i, f, 1)),
    (M3, 0x22, P66, "pinsrd"): S("sse4_1", lambda x, i, f: insert(x, i, f, 4)),
    (M3, 0x22, P66, "pinsrq"): S("sse4_1", lambda x, i, f: insert(x, i, f, 8)),
}


def sse_move(x: Exec, i: Insn) -> Steps:
    f = fields(i)
    form = SSE_FORMS[i.opmap, i.opcode, f.pp, i.mnemonic]
    if form.checks != MMX:
        check_sse(x, form.feature)
    if form.checks != SSE:
        check_mmx(x, form.feature, form.on_fault)
    yield from form.body(x, i, f)


def _register() -> None:
    """One form per opcode (LDMXCSR/STMXCSR: per ModRM.reg), limited to the table's mnemonics."""
    mnemonics: dict[tuple[int, int], set[str]] = {}
    for m, op, _pp, mnemonic in SSE_FORMS:
        mnemonics.setdefault((m, op), set()).add(mnemonic)
    for (m, op), names in mnemonics.items():
        regs = (2, 3) if (m, op) == (M1, 0xAE) else (ANY_REG,)
        emulates(OpMap(m), (op,), regs, mem_only=op == 0xAE, mnemonics=names)(sse_move)


_register()

__all__ = ["MXCSR_MASK", "SSE_FORMS", "SseForm", "ldmxcsr", "mask_move", "sse_move", "stmxcsr"]
