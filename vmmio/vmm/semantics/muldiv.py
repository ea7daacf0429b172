"""Multiplication and division: MUL, IMUL, DIV, IDIV (F6/F7 /4-/7) and the two- and three-operand IMUL
(0F AF, 69, 6B).

The one-operand forms work on the accumulator: AX = AL * r/m8, rDX:rAX = rAX * r/m; division leaves the
quotient in AL / rAX and the remainder in AH / rDX. A zero divisor or a quotient that does not fit
raises #DE after the operand was read (the device sees the read). DIV and IDIV leave all six status
flags undefined; the Intel host leaves them unchanged, and so does vmmio.
"""

from __future__ import annotations

from vmmio.vmm.semantics.context import Exec, Steps
from vmmio.vmm.semantics.registry import emulates
from vmmio.x86 import flags
from vmmio.x86.faults import DE, GuestFault
from vmmio.x86.insn import Insn, OpMap
from vmmio.x86.regs import MASK, SIGN, Gpr

_MUL, _IMUL, _DIV, _IDIV = 4, 5, 6, 7  # ModRM.reg of F6/F7


def _acc_pair(x: Exec, w: int) -> int:
    """The double-width accumulator: AX for bytes, else rDX:rAX."""
    if w == 1:
        return x.get(Gpr.RAX, 2)
    return x.get(Gpr.RDX, w) << (8 * w) | x.get(Gpr.RAX, w)


def _set_acc_pair(x: Exec, w: int, low: int, high: int) -> None:
    if w == 1:
        x.set(Gpr.RAX, 2, high << 8 | low)
    else:
        x.set(Gpr.RAX, w, low)
        x.set(Gpr.RDX, w, high)


@emulates(OpMap.ONE, (0xF6, 0xF7), (_MUL, _IMUL))
def mul_acc(x: Exec, i: Insn) -> Steps:
    w = i.width
    b = yield from x.rm_read(w)
    low, high, fl = flags.multiply(i.reg & 7 == _IMUL, w, x.get(Gpr.RAX, w), b, x.rflags)
    _set_acc_pair(x, w, low, high)
    x.set_flags(fl)


def _divide(signed: bool, w: int, dividend: int, divisor: int) -> tuple[int, int]:
    """(quotient, remainder) masked to `w` bytes, truncating towards zero; #DE as the CPU raises it."""
    if signed:
        dividend -= (dividend & (SIGN[w] << (8 * w))) << 1
        divisor -= (divisor & SIGN[w]) << 1
    if not divisor:
        raise GuestFault(DE)
    q = abs(dividend) // abs(divisor)
    if (dividend < 0) != (divisor < 0):
        q = -q
    r = dividend - q * divisor
    if (signed and not -SIGN[w] <= q < SIGN[w]) or (not signed and q > MASK[w]):
        raise GuestFault(DE)
    return q & MASK[w], r & MASK[w]


@emulates(OpMap.ONE, (0xF6, 0xF7), (_DIV, _IDIV))
def div_acc(x: Exec, i: Insn) -> Steps:
    w = i.width
    divisor = yield from x.rm_read(w)
    q, r = _divide(i.reg & 7 == _IDIV, w, _acc_pair(x, w), divisor)
    _set_acc_pair(x, w, q, r)


_IMUL_RM = 0xAF  # 0F AF: reg = reg * r/m; 69 and 6B: reg = r/m * imm


@emulates(OpMap.M0F, (_IMUL_RM,))
@emulates(OpMap.ONE, (0x69, 0x6B))
def imul_reg(x: Exec, i: Insn) -> Steps:
    """The truncating IMUL: the low half to the register, CF = OF = the product did not fit."""
    w = i.width
    b = yield from x.rm_read(w)
    a = x.get(i.reg, w) if i.opmap == OpMap.M0F else i.imm
    low, _, fl = flags.multiply(True, w, a, b, x.rflags)
    x.set(i.reg, w, low)
    x.set_flags(fl)
