"""VEX-encoded moves (VMOV*, VMASKMOV*, VPMASKMOV*, VBROADCAST*, VPBROADCAST*, VPEXTR*/VPINSR*, VLDMXCSR).

One table row per (map, opcode, VEX.pp): the CPUID feature (by VEX.L where it differs), what VEX.L, W
and vvvv may be (anything else is #UD: the decoder only knows the opcode bytes exist), and the body,
shared with the legacy forms (`vector_moves`) except for the masked moves. VEX writes zero the
destination above the vector length. The aligned forms check alignment on the vector length; nothing
else does, and no operand of 16 bytes or more is checked for #AC.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vmmio.abi import InstEmulReason
from vmmio.vmm.abort import EmulationAbort
from vmmio.vmm.semantics import masked
from vmmio.vmm.semantics.context import Exec, Steps
from vmmio.vmm.semantics.registry import ANY_REG, emulates
from vmmio.vmm.semantics.sse_moves import ldmxcsr, mask_move, stmxcsr
from vmmio.vmm.semantics.vector import NP, P66, PF2, PF3, VecFields, check_vex, ea, fields
from vmmio.vmm.semantics.vector_moves import (
    Body,
    broadcast,
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
    put,
    reg,
    scalar_load,
    scalar_store,
    zero_extend_load,
)
from vmmio.x86.faults import UD, GuestFault
from vmmio.x86.insn import Encoding, Insn, OpMap

ANY, L0, L1, LIG = "any", "l0", "l1", "lig"  # what VEX.L may be: both, 0, 1, ignored (128 bits)
MEM, REG, BOTH = "mem", "reg", "both"  # operand forms that exist (the other is #UD)


@dataclass(frozen=True, slots=True)
class VexForm:
    name: str
    feature: str  # CPUID feature (at VEX.L = 0)
    body: Body
    l_rule: str = ANY
    forms: str = BOTH
    uses_vvvv: bool = False  # else vvvv must be 1111b
    w0: bool = False  # VEX.W1 is #UD
    feature_l1: str = ""  # the feature at VEX.L = 1, if another
    feature_reg: str = ""  # the feature of the register form, if another


def _load(align: bool = False) -> Body:
    return lambda x, i, f: move_load(x, i, f, f.vl, align)


def _store(align: bool = False) -> Body:
    return lambda x, i, f: move_store(x, i, f, f.vl, align)


def _gpr_size(i: Insn, f: VecFields) -> int:
    """VMOVD/VPEXTRD/VPINSRD, or with VEX.W1 in 64-bit mode the Q forms (W1 is ignored elsewhere)."""
    return 8 if f.w and i.mode == 64 else 4


def _half_or_pair(pair: Callable[[Exec, VecFields], None], high: bool) -> Body:
    """0F 12/16 without prefix: VMOVHLPS/VMOVLHPS between registers, VMOVLPS/VMOVHPS from memory."""

    def body(x: Exec, i: Insn, f: VecFields) -> Steps:
        if i.mem is None:
            pair(x, f)
            return
        yield from half_load(x, i, f, high)

    return body


def _masked_move(esize: int, is_store: bool) -> Body:
    """VMASKMOVPS/PD, VPMASKMOVD/Q: elements whose mask element (vvvv) has its sign bit set. A load
    zeroes the others; a store leaves their memory alone. Unselected elements are never accessed and
    raise nothing, even at a non-canonical address (host CPU)."""

    def body(x: Exec, i: Insn, f: VecFields) -> Steps:
        nelem = f.vl // esize
        mask = reg(x, f.vvvv, f.vl)
        sel = 0
        for n in range(nelem):
            sel |= (mask >> (8 * esize * (n + 1) - 1) & 1) << n
        seg, off = ea(x, i)
        parts = masked.runs(sel, esize, nelem)
        if is_store:
            yield from masked.store(seg, off, i.addr_size, parts, reg(x, f.reg, f.vl))
        else:
            put(x, f, f.reg, (yield from masked.load(seg, off, i.addr_size, parts)), f.vl)

    return body


def _vmaskmovdqu(x: Exec, i: Insn, f: VecFields) -> Steps:
    yield from mask_move(x, i, reg(x, f.reg), reg(x, f.rm), 16)


def _mxcsr(load: bool) -> Body:
    return lambda x, i, f: (ldmxcsr if load else stmxcsr)(x, i)


def _scalar(esize: int, is_store: bool) -> Body:
    """VMOVSS/VMOVSD: from/to memory vvvv must be 1111b; between registers it is the merged source."""

    def body(x: Exec, i: Insn, f: VecFields) -> Steps:
        if i.mem is not None and f.vvvv:
            raise GuestFault(UD)
        yield from (scalar_store if is_store else scalar_load)(x, i, f, esize)

    return body


def _bcast(esize: int) -> Body:
    return lambda x, i, f: broadcast(x, i, f, esize)


M1, M2, M3 = OpMap.M0F, OpMap.M0F38, OpMap.M0F3A
F = VexForm
VEX_FORMS: dict[tuple[int, int, int], VexForm] = {
    (M1, 0x10, NP): F("vmovups", "avx", _load()),
    (M1, 0x10, P66): F("vmovupd", "avx", _load()),
    (M1, 0x10, PF3): F("vmovss", "avx", _scalar(4, False), LIG, uses_vvvv=True),
    (M1, 0x10, PF2): F("vmovsd", "avx", _scalar(8, False), LIG, uses_vvvv=True),
    (M1, 0x11, NP): F("vmovups", "avx", _store()),
    (M1, 0x11, P66): F("vmovupd", "avx", _store()),
    (M1, 0x11, PF3): F("vmovss", "avx", _scalar(4, True), LIG, uses_vvvv=True),
    (M1, 0x11, PF2): F("vmovsd", "avx", _scalar(8, True), LIG, uses_vvvv=True),
    (M1, 0x12, NP): F("vmovlps/vmovhlps", "avx", _half_or_pair(movhlps, False), L0, uses_vvvv=True),
    (M1, 0x12, P66): F("vmovlpd", "avx", lambda x, i, f: half_load(x, i, f, False), L0, MEM, True),
    (M1, 0x12, PF3): F("vmovsldup", "avx", lambda x, i, f: duplicate(x, i, f, "movsldup", f.vl)),
    (M1, 0x12, PF2): F("vmovddup", "avx", lambda x, i, f: duplicate(x, i, f, "movddup", f.vl)),
    (M1, 0x13, NP): F("vmovlps", "avx", lambda x, i, f: half_store(x, i, f, False), L0, MEM),
    (M1, 0x13, P66): F("vmovlpd", "avx", lambda x, i, f: half_store(x, i, f, False), L0, MEM),
    (M1, 0x16, NP): F("vmovhps/vmovlhps", "avx", _half_or_pair(movlhps, True), L0, uses_vvvv=True),
    (M1, 0x16, P66): F("vmovhpd", "avx", lambda x, i, f: half_load(x, i, f, True), L0, MEM, True),
    (M1, 0x16, PF3): F("vmovshdup", "avx", lambda x, i, f: duplicate(x, i, f, "movshdup", f.vl)),
    (M1, 0x17, NP): F("vmovhps", "avx", lambda x, i, f: half_store(x, i, f, True), L0, MEM),
    (M1, 0x17, P66): F("vmovhpd", "avx", lambda x, i, f: half_store(x, i, f, True), L0, MEM),
    (M1, 0x28, NP): F("vmovaps", "avx", _load(align=True)),
    (M1, 0x28, P66): F("vmovapd", "avx", _load(align=True)),
    (M1, 0x29, NP): F("vmovaps", "avx", _store(align=True)),
    (M1, 0x29, P66): F("vmovapd", "avx", _store(align=True)),
    (M1, 0x2B, NP): F("vmovntps", "avx", _store(align=True), forms=MEM),
    (M1, 0x2B, P66): F("vmovntpd", "avx", _store(align=True), forms=MEM),
    (M1, 0x6E, P66): F("vmovd/vmovq", "avx", lambda x, i, f: zero_extend_load(x, i, f, _gpr_size(i, f), True),
                       L0),
    (M1, 0x7E, P66): F("vmovd/vmovq", "avx", lambda x, i, f: low_store(x, i, f, _gpr_size(i, f), True), L0),
    (M1, 0x7E, PF3): F("vmovq", "avx", lambda x, i, f: zero_extend_load(x, i, f, 8, False), L0),
    (M1, 0x6F, P66): F("vmovdqa", "avx", _load(align=True)),
    (M1, 0x6F, PF3): F("vmovdqu", "avx", _load()),
    (M1, 0x7F, P66): F("vmovdqa", "avx", _store(align=True)),
    (M1, 0x7F, PF3): F("vmovdqu", "avx", _store()),
    (M1, 0xC4, P66): F("vpinsrw", "avx", lambda x, i, f: insert(x, i, f, 2), L0, uses_vvvv=True),
    (M1, 0xD6, P66): F("vmovq", "avx", lambda x, i, f: low_store(x, i, f, 8, False), L0),
    (M1, 0xE7, P66): F("vmovntdq", "avx", _store(align=True), forms=MEM),
    (M1, 0xF0, PF2): F("vlddqu", "avx", _load(), forms=MEM),
    (M1, 0xF7, P66): F("vmaskmovdqu", "avx", _vmaskmovdqu, L0, REG),
    (M2, 0x18, P66): F("vbroadcastss", "avx", _bcast(4), w0=True, feature_reg="avx2"),
    (M2, 0x19, P66): F("vbroadcastsd", "avx", _bcast(8), L1, w0=True, feature_reg="avx2"),
    (M2, 0x1A, P66): F("vbroadcastf128", "avx", _bcast(16), L1, MEM, w0=True),
    (M2, 0x2A, P66): F("vmovntdqa", "avx", _load(align=True), forms=MEM, feature_l1="avx2"),
    (M2, 0x2C, P66): F("vmaskmovps", "avx", _masked_move(4, False), forms=MEM, uses_vvvv=True, w0=True),
    (M2, 0x2D, P66): F("vmaskmovpd", "avx", _masked_move(8, False), forms=MEM, uses_vvvv=True, w0=True),
    (M2, 0x2E, P66): F("vmaskmovps", "avx", _masked_move(4, True), forms=MEM, uses_vvvv=True, w0=True),
    (M2, 0x2F, P66): F("vmaskmovpd", "avx", _masked_move(8, True), forms=MEM, uses_vvvv=True, w0=True),
    (M2, 0x58, P66): F("vpbroadcastd", "avx2", _bcast(4), w0=True),
    (M2, 0x59, P66): F("vpbroadcastq", "avx2", _bcast(8), w0=True),
    (M2, 0x5A, P66): F("vbroadcasti128", "avx2", _bcast(16), L1, MEM, w0=True),
    (M2, 0x78, P66): F("vpbroadcastb", "avx2", _bcast(1), w0=True),
    (M2, 0x79, P66): F("vpbroadcastw", "avx2", _bcast(2), w0=True),
    (M3, 0x14, P66): F("vpextrb", "avx", lambda x, i, f: extract(x, i, f, 1), L0),
    (M3, 0x15, P66): F("vpextrw", "avx", lambda x, i, f: extract(x, i, f, 2), L0),
    (M3, 0x16, P66): F("vpextrd/vpextrq", "avx", lambda x, i, f: extract(x, i, f, _gpr_size(i, f)), L0),
    (M3, 0x17, P66): F("vextractps", "avx", lambda x, i, f: extract(x, i, f, 4), L0),
    (M3, 0x20, P66): F("vpinsrb", "avx", lambda x, i, f: insert(x, i, f, 1), L0, uses_vvvv=True),
    (M3, 0x22, P66): F("vpinsrd/vpinsrq", "avx", lambda x, i, f: insert(x, i, f, _gpr_size(i, f)), L0,
                       uses_vvvv=True),
}  # fmt: skip
# VPMASKMOVD (W0) and VPMASKMOVQ (W1) share their opcodes.
_VPMASKMOV = {
    (0x8C, 0): F("vpmaskmovd", "avx2", _masked_move(4, False), forms=MEM, uses_vvvv=True),
    (0x8C, 1): F("vpmaskmovq", "avx2", _masked_move(8, False), forms=MEM, uses_vvvv=True),
    (0x8E, 0): F("vpmaskmovd", "avx2", _masked_move(4, True), forms=MEM, uses_vvvv=True),
    (0x8E, 1): F("vpmaskmovq", "avx2", _masked_move(8, True), forms=MEM, uses_vvvv=True),
}
_MXCSR = {
    2: F("vldmxcsr", "avx", _mxcsr(True), L0, MEM),
    3: F("vstmxcsr", "avx", _mxcsr(False), L0, MEM),
}


def vex_form(i: Insn, f: VecFields) -> VexForm:
    """The row of a VEX move; #UD for a W/L/vvvv/operand combination the move does not have. A mandatory
    prefix no row has is another instruction (or none): handed to userspace, not guessed at."""
    if i.opmap == M2 and i.opcode in (0x8C, 0x8E):
        form = _VPMASKMOV.get((i.opcode, f.w)) if f.pp == P66 else None
        known = f.pp == P66
    elif i.opmap == M1 and i.opcode == 0xAE:
        form = _MXCSR.get(i.reg & 7) if f.pp == NP else None
        known = f.pp == NP
    else:
        form = VEX_FORMS.get((i.opmap, i.opcode, f.pp))
        known = form is not None
    if not known:
        raise EmulationAbort(InstEmulReason.NOT_EMULATED, "not a VEX move vmmio emulates")
    if (
        form is None
        or (form.l_rule == L0 and f.ll)
        or (form.l_rule == L1 and not f.ll)
        or (form.forms == MEM and i.mem is None)
        or (form.forms == REG and i.mem is not None)
        or (form.w0 and f.w)
        or (f.vvvv and not form.uses_vvvv)
    ):
        raise GuestFault(UD)
    return form


def _feature(form: VexForm, i: Insn, f: VecFields) -> str:
    if form.feature_reg and i.mem is None:
        return form.feature_reg
    if form.feature_l1 and f.ll:
        return form.feature_l1
    return form.feature


def vex_move(x: Exec, i: Insn) -> Steps:
    f = fields(i)
    form = vex_form(i, f)
    check_vex(x, _feature(form, i, f))
    if form.l_rule == LIG and f.ll:
        f = VecFields(f.encoding, f.pp, f.w, 16, 0, f.reg, f.rm, f.vvvv)
    yield from form.body(x, i, f)


def _register() -> None:
    """One form per opcode (per ModRM.reg for VLDMXCSR/VSTMXCSR), named by the rows it covers."""
    names: dict[tuple[int, int, int], list[str]] = {}
    rows = [((m, op, ANY_REG), form) for (m, op, _pp), form in VEX_FORMS.items()]
    rows += [((M2, op, ANY_REG), form) for (op, _w), form in _VPMASKMOV.items()]
    rows += [((M1, 0xAE, r), form) for r, form in _MXCSR.items()]
    for key, form in rows:
        if form.name not in names.setdefault(key, []):
            names[key].append(form.name)
    for (m, op, r), covered in names.items():
        emulates(OpMap(m), (op,), (r,), encoding=Encoding.VEX, names=covered)(vex_move)


_register()

__all__ = ["ANY", "BOTH", "L0", "L1", "LIG", "MEM", "REG", "VEX_FORMS", "VexForm", "vex_form", "vex_move"]
