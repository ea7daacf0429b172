"""EVEX-encoded moves with opmasks: VMOVDQU8/16/32/64, VMOVDQA32/64, VMOVUPS/UPD/APS/APD, and the
non-temporal VMOVNTDQ/VMOVNTPS/VMOVNTPD/VMOVNTDQA.

With EVEX.aaa = 0 a move is a plain 16/32/64-byte access. With an opmask register it is a masked one
(`masked`): only the selected elements are accessed and only they can fault, a load merges into the
destination (or zeroes the unselected elements with EVEX.z), a store leaves unselected memory alone.
The aligned forms raise #GP(0) for a memory operand not aligned on the vector length, but only when
some element is selected: with an all-zero opmask the host CPU raises nothing at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from vmmio.abi import InstEmulReason
from vmmio.vmm.abort import EmulationAbort
from vmmio.vmm.semantics import masked
from vmmio.vmm.semantics.context import Exec, Steps
from vmmio.vmm.semantics.registry import emulates
from vmmio.vmm.semantics.vector import (
    NP,
    P66,
    PF2,
    PF3,
    VecFields,
    aligned,
    blend,
    check_evex,
    ea,
    fields,
    load,
    opmask,
    store,
)
from vmmio.vmm.semantics.vector_moves import put, reg
from vmmio.x86.faults import UD, GuestFault
from vmmio.x86.insn import Encoding, Insn, OpMap


@dataclass(frozen=True, slots=True)
class EvexForm:
    name: str
    esize: int  # element size: the opmask's granularity
    is_store: bool
    align: bool = False
    nt: bool = False  # non-temporal: memory only, no opmask


M1, M2 = OpMap.M0F, OpMap.M0F38
F = EvexForm
# (map, opcode, pp, W) -> form.
EVEX_FORMS: dict[tuple[int, int, int, int], EvexForm] = {
    (M1, 0x10, NP, 0): F("vmovups", 4, False),
    (M1, 0x10, P66, 1): F("vmovupd", 8, False),
    (M1, 0x11, NP, 0): F("vmovups", 4, True),
    (M1, 0x11, P66, 1): F("vmovupd", 8, True),
    (M1, 0x28, NP, 0): F("vmovaps", 4, False, True),
    (M1, 0x28, P66, 1): F("vmovapd", 8, False, True),
    (M1, 0x29, NP, 0): F("vmovaps", 4, True, True),
    (M1, 0x29, P66, 1): F("vmovapd", 8, True, True),
    (M1, 0x2B, NP, 0): F("vmovntps", 4, True, True, True),
    (M1, 0x2B, P66, 1): F("vmovntpd", 8, True, True, True),
    (M1, 0x6F, P66, 0): F("vmovdqa32", 4, False, True),
    (M1, 0x6F, P66, 1): F("vmovdqa64", 8, False, True),
    (M1, 0x6F, PF3, 0): F("vmovdqu32", 4, False),
    (M1, 0x6F, PF3, 1): F("vmovdqu64", 8, False),
    (M1, 0x6F, PF2, 0): F("vmovdqu8", 1, False),
    (M1, 0x6F, PF2, 1): F("vmovdqu16", 2, False),
    (M1, 0x7F, P66, 0): F("vmovdqa32", 4, True, True),
    (M1, 0x7F, P66, 1): F("vmovdqa64", 8, True, True),
    (M1, 0x7F, PF3, 0): F("vmovdqu32", 4, True),
    (M1, 0x7F, PF3, 1): F("vmovdqu64", 8, True),
    (M1, 0x7F, PF2, 0): F("vmovdqu8", 1, True),
    (M1, 0x7F, PF2, 1): F("vmovdqu16", 2, True),
    (M1, 0xE7, P66, 0): F("vmovntdq", 4, True, True, True),
    (M2, 0x2A, P66, 0): F("vmovntdqa", 4, False, True, True),
}
_PREFIXES = {(m, op, pp) for m, op, pp, _w in EVEX_FORMS}


def evex_form(i: Insn, f: VecFields) -> EvexForm:
    """The row of an EVEX move; #UD for a W the move does not have, or a field it forbids. A mandatory
    prefix no row has (VMOVSS/VMOVSD at F3/F2 0F 10/11, VPBROADCASTMB2Q at F3 0F38 2A, ...) is another
    instruction: handed to userspace."""
    form = EVEX_FORMS.get((i.opmap, i.opcode, f.pp, f.w))
    if form is None:
        if (i.opmap, i.opcode, f.pp) not in _PREFIXES:
            raise EmulationAbort(InstEmulReason.NOT_EMULATED, "not an EVEX move vmmio emulates")
        raise GuestFault(UD)
    if (
        f.b  # no broadcast, no rounding control
        or (form.nt and (i.mem is None or f.aaa or f.z))
        or (f.z and form.is_store and i.mem is not None)  # zeroing-masking of memory
        or (f.z and not f.aaa)  # zeroing without an opmask (host CPU)
    ):
        raise GuestFault(UD)
    return form


def _load(x: Exec, i: Insn, f: VecFields, form: EvexForm, sel: int, nelem: int) -> Steps:
    vl = f.vl
    if i.mem is None:
        value = reg(x, f.rm, vl)
    else:
        if form.align and sel:
            yield from aligned(x, i, vl)
        if not f.aaa:
            value = yield from load(x, i, vl)
        else:
            seg, off = ea(x, i)
            value = yield from masked.load(seg, off, i.addr_size, masked.runs(sel, form.esize, nelem))
    if f.aaa:
        value = blend(reg(x, f.reg, vl), value, sel, form.esize, nelem, f.z)
    put(x, f, f.reg, value, vl)


def _store(x: Exec, i: Insn, f: VecFields, form: EvexForm, sel: int, nelem: int) -> Steps:
    vl = f.vl
    value = reg(x, f.reg, vl)
    if i.mem is None:
        if f.aaa:
            value = blend(reg(x, f.rm, vl), value, sel, form.esize, nelem, f.z)
        put(x, f, f.rm, value, vl)
        return
    if form.align and sel:
        yield from aligned(x, i, vl)
    if not f.aaa:
        yield from store(x, i, vl, value)
        return
    seg, off = ea(x, i)
    yield from masked.store(seg, off, i.addr_size, masked.runs(sel, form.esize, nelem), value)


def evex_move(x: Exec, i: Insn) -> Steps:
    f = fields(i)
    form = evex_form(i, f)
    check_evex(x, f, form.esize < 4)
    nelem = f.vl // form.esize
    sel = opmask(x.vector(), f, nelem)
    yield from (_store if form.is_store else _load)(x, i, f, form, sel, nelem)


def _register() -> None:
    """One form per opcode, named by the rows it covers."""
    names: dict[tuple[int, int], list[str]] = {}
    for (m, op, _pp, _w), form in EVEX_FORMS.items():
        if form.name not in names.setdefault((m, op), []):
            names[m, op].append(form.name)
    for (m, op), covered in names.items():
        emulates(OpMap(m), (op,), encoding=Encoding.EVEX, names=covered)(evex_move)


_register()

__all__ = ["EVEX_FORMS", "EvexForm", "evex_form", "evex_move"]
