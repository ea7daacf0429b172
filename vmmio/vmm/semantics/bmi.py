"""The BMI1/BMI2 general-purpose instructions (VEX-encoded): ANDN, BEXTR, BLSI, BLSMSK, BLSR, BZHI, MULX,
PDEP, PEXT, RORX, SARX, SHLX, SHRX.

One table row per form: its VEX map, opcode, mandatory prefix (VEX.pp) and, for the F3 group, ModRM.reg;
the operation; its CPUID feature; where the result goes. The operand size is 64 bits with VEX.W1 in
64-bit mode and 32 bits otherwise (VEX.W1 is ignored outside 64-bit mode, as is the high bit of
VEX.vvvv). #UD: VEX.L = 1; for RORX, which has no vvvv operand, a VEX.vvvv field other than 1111b (all
four bits checked in every mode); VEX in real and virtual-8086 mode. Only ANDN, BEXTR, BLS* and BZHI
change flags (`vmmio.x86.flags.bmi_logic`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vmmio.vmm.semantics.context import Exec, Steps
from vmmio.vmm.semantics.registry import emulates
from vmmio.x86 import flags
from vmmio.x86.faults import UD, GuestFault
from vmmio.x86.insn import Encoding, Insn, OpMap
from vmmio.x86.regs import MASK, VM, Gpr
from vmmio.x86.state import CR0_PE

NP, P66, PF3, PF2 = range(4)  # VEX.pp: the implied mandatory prefix
NO_REG = -1

# (result, CF) of an operation on (r/m, second operand, operand size in bytes); CF None: flags unchanged.
BmiFn = Callable[[int, int, int], tuple[int, bool | None]]


def _bits(size: int) -> int:
    return 8 * size


def _andn(rm: int, v: int, size: int) -> tuple[int, bool | None]:
    return ~v & rm & MASK[size], False


def _bextr(rm: int, control: int, size: int) -> tuple[int, bool | None]:
    start, length = control & 0xFF, control >> 8 & 0xFF
    return (rm >> start) & ((1 << length) - 1) & MASK[size], False


def _blsi(rm: int, _v: int, size: int) -> tuple[int, bool | None]:
    return -rm & rm & MASK[size], rm != 0


def _blsmsk(rm: int, _v: int, size: int) -> tuple[int, bool | None]:
    return (rm - 1 ^ rm) & MASK[size], rm == 0


def _blsr(rm: int, _v: int, size: int) -> tuple[int, bool | None]:
    return (rm - 1) & rm & MASK[size], rm == 0


def _bzhi(rm: int, index: int, size: int) -> tuple[int, bool | None]:
    n = index & 0xFF
    if n >= _bits(size):
        return rm, True
    return rm & ((1 << n) - 1), False


def _pdep(mask: int, src: int, size: int) -> tuple[int, bool | None]:
    res, k = 0, 0
    for bit in range(_bits(size)):
        if mask >> bit & 1:
            res |= (src >> k & 1) << bit
            k += 1
    return res, None


def _pext(mask: int, src: int, size: int) -> tuple[int, bool | None]:
    res, k = 0, 0
    for bit in range(_bits(size)):
        if mask >> bit & 1:
            res |= (src >> bit & 1) << k
            k += 1
    return res, None


def _count(n: int, size: int) -> int:
    return n & (0x3F if size == 8 else 0x1F)


def _shlx(rm: int, n: int, size: int) -> tuple[int, bool | None]:
    return (rm << _count(n, size)) & MASK[size], None


def _shrx(rm: int, n: int, size: int) -> tuple[int, bool | None]:
    return rm >> _count(n, size), None


def _sarx(rm: int, n: int, size: int) -> tuple[int, bool | None]:
    signed = rm - (1 << _bits(size)) if rm >> (_bits(size) - 1) else rm
    return (signed >> _count(n, size)) & MASK[size], None


def _rorx(rm: int, n: int, size: int) -> tuple[int, bool | None]:
    c = _count(n, size)
    return ((rm >> c) | (rm << (_bits(size) - c))) & MASK[size], None


def _mulx(rm: int, rdx: int, size: int) -> tuple[int, bool | None]:
    return rm * rdx, None  # both halves; the caller splits them


@dataclass(frozen=True)
class BmiForm:
    name: str
    feature: str
    fn: BmiFn
    second: str  # the operation's second operand: "vvvv", "imm" (RORX) or "rdx" (MULX)
    dest: str  # "reg", "vvvv" (BLS*) or "reg:vvvv" (MULX: high half to reg, low half to vvvv)


_B1, _B2 = "bmi1", "bmi2"
# (opmap, opcode, pp, ModRM.reg or NO_REG) -> form
FORMS: dict[tuple[OpMap, int, int, int], BmiForm] = {
    (OpMap.M0F38, 0xF2, NP, NO_REG): BmiForm("andn", _B1, _andn, "vvvv", "reg"),
    (OpMap.M0F38, 0xF3, NP, 1): BmiForm("blsr", _B1, _blsr, "vvvv", "vvvv"),
    (OpMap.M0F38, 0xF3, NP, 2): BmiForm("blsmsk", _B1, _blsmsk, "vvvv", "vvvv"),
    (OpMap.M0F38, 0xF3, NP, 3): BmiForm("blsi", _B1, _blsi, "vvvv", "vvvv"),
    (OpMap.M0F38, 0xF5, NP, NO_REG): BmiForm("bzhi", _B2, _bzhi, "vvvv", "reg"),
    (OpMap.M0F38, 0xF5, PF2, NO_REG): BmiForm("pdep", _B2, _pdep, "vvvv", "reg"),
    (OpMap.M0F38, 0xF5, PF3, NO_REG): BmiForm("pext", _B2, _pext, "vvvv", "reg"),
    (OpMap.M0F38, 0xF6, PF2, NO_REG): BmiForm("mulx", _B2, _mulx, "rdx", "reg:vvvv"),
    (OpMap.M0F38, 0xF7, NP, NO_REG): BmiForm("bextr", _B1, _bextr, "vvvv", "reg"),
    (OpMap.M0F38, 0xF7, P66, NO_REG): BmiForm("shlx", _B2, _shlx, "vvvv", "reg"),
    (OpMap.M0F38, 0xF7, PF3, NO_REG): BmiForm("sarx", _B2, _sarx, "vvvv", "reg"),
    (OpMap.M0F38, 0xF7, PF2, NO_REG): BmiForm("shrx", _B2, _shrx, "vvvv", "reg"),
    (OpMap.M0F3A, 0xF0, PF2, NO_REG): BmiForm("rorx", _B2, _rorx, "imm", "reg"),
}
_GROUPS = {(OpMap.M0F38, 0xF3)}  # forms told apart by ModRM.reg
_VEX_LEAD = frozenset((0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x67))  # prefixes allowed before VEX


def vex_fields(i: Insn) -> tuple[int, int, int]:
    """(pp, vvvv, W) of a VEX instruction, read from its bytes (vvvv un-inverted, all four bits)."""
    raw = i.raw
    n = 0
    while raw[n] in _VEX_LEAD:
        n += 1
    if raw[n] == 0xC5:
        b = raw[n + 1]
        return b & 3, ~b >> 3 & 0xF, 0
    b = raw[n + 2]
    return b & 3, ~b >> 3 & 0xF, b >> 7


def form_of(i: Insn, pp: int) -> BmiForm:
    """The BMI form `i` encodes with VEX.pp `pp`; #UD for the VEX encodings around them that are not
    instructions."""
    reg = i.reg & 7 if (i.opmap, i.opcode) in _GROUPS else NO_REG
    form = FORMS.get((OpMap(i.opmap), i.opcode, pp, reg))
    if form is None:
        raise GuestFault(UD)
    return form


@emulates(OpMap.M0F38, (0xF2, 0xF3, 0xF5, 0xF6, 0xF7), encoding=Encoding.VEX)
@emulates(OpMap.M0F3A, (0xF0,), encoding=Encoding.VEX)
def bmi(x: Exec, i: Insn) -> Steps:
    pp, vvvv, w = vex_fields(i)
    form = form_of(i, pp)
    if i.vex_l or not x.ctl.cr0 & CR0_PE or x.rflags & VM or (form.second == "imm" and vvvv):
        raise GuestFault(UD)
    x.require(form.feature)
    if i.mode != 64:
        vvvv &= 7
    size = 8 if w and i.mode == 64 else 4
    rm = yield from x.rm_read(size)
    second = i.imm if form.second == "imm" else x.get(Gpr.RDX if form.second == "rdx" else vvvv, size)
    res, cf = form.fn(rm, second, size)
    if form.dest == "reg:vvvv":
        x.set(vvvv, size, res)  # the low half first: the high half wins when both name one register
        x.set(i.reg, size, res >> _bits(size))
    else:
        x.set(i.reg if form.dest == "reg" else vvvv, size, res)
    if cf is not None:
        x.set_flags(flags.bmi_logic(size, res, cf, x.rflags))
