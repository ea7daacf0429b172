"""Status-flag arithmetic of the integer ALU instructions, bit-exact with the Intel SDM.

Every function takes the operand size in bytes (1, 2, 4 or 8; anything else raises KeyError), the
operands and the current RFLAGS, and returns the new RFLAGS in which only the six status flags (CF PF
AF ZF SF OF) may differ. Operands are masked to the operand size, so a negative operand is read as its
two's complement. This is on the emulator's hot path: integer operations and one look-up per call, no
allocation beyond the returned tuple.

Architecturally undefined flags get a fixed, documented value (the SDM leaves them free; we pick what
the hardware does; tests/test_flags.py checks the choice against the host CPU and Unicorn):

- AND, OR, XOR, TEST: AF is undefined; we clear it. The AMD Zen 3 host the tests were written on and
  Unicorn (QEMU) clear it, and clearing is the widely reported Intel behaviour (Bochs does it too).
- BT, BTS, BTR, BTC: CF is the selected bit; ZF is unaffected (newer SDMs say so for BT); OF, SF, AF,
  PF are undefined. We leave all five unchanged: the AMD Zen 3 host and Unicorn leave them unchanged,
  and Bochs, an Intel-oriented model, writes only CF. No Intel host was available to check directly.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import Final

from vmmio.x86.regs import AF, CF, OF, PF, SF, STATUS_FLAGS, ZF

__all__ = [
    "ALU_TABLE",
    "PARITY",
    "AluFn",
    "AluOp",
    "alu",
    "bt_flags",
    "dec",
    "inc",
    "neg",
    "test",
]


class AluOp(IntEnum):
    """Group-1 operation, numbered as ModRM.reg of opcodes 80-83 (and bits 5:3 of opcodes 00-3F)."""

    ADD = 0
    OR = 1
    ADC = 2
    SBB = 3
    AND = 4
    SUB = 5
    XOR = 6
    CMP = 7


AluFn = Callable[[int, int, int, int], tuple[int, int]]
"""(size, a, b, rflags) -> (result, new rflags)."""

# PF for each value of the low result byte: set when the byte has an even number of one bits.
PARITY: Final[bytes] = bytes(PF if bin(v).count("1") % 2 == 0 else 0 for v in range(256))

# RFLAGS bits kept by an instruction that writes all status flags / all but CF (INC, DEC).
_KEEP: Final = ~STATUS_FLAGS
_KEEP_CF: Final = ~(STATUS_FLAGS & ~CF)

# size -> (mask, sign bit, shift bringing the sign bit to SF's position (bit 7), width in bits)
_GEOM: Final[dict[int, tuple[int, int, int, int]]] = {
    1: (0xFF, 0x80, 0, 8),
    2: (0xFFFF, 0x8000, 8, 16),
    4: (0xFFFF_FFFF, 0x8000_0000, 24, 32),
    8: (0xFFFF_FFFF_FFFF_FFFF, 0x8000_0000_0000_0000, 56, 64),
}


def _sum(size: int, a: int, b: int, carry: int, rflags: int) -> tuple[int, int]:
    """a + b + carry with the flags of ADD/ADC."""
    mask, sign, sf_shift, bits = _GEOM[size]
    a &= mask
    b &= mask
    r = a + b + carry
    res = r & mask
    f = (r >> bits) | ((a ^ b ^ res) & AF) | PARITY[res & 0xFF] | ((res >> sf_shift) & SF)
    if not res:
        f |= ZF
    if (a ^ res) & (b ^ res) & sign:
        f |= OF
    return res, (rflags & _KEEP) | f


def _difference(size: int, a: int, b: int, borrow: int, rflags: int) -> tuple[int, int]:
    """a - b - borrow with the flags of SUB/SBB/CMP."""
    mask, sign, sf_shift, bits = _GEOM[size]
    a &= mask
    b &= mask
    r = a - b - borrow
    res = r & mask
    # r < 0 exactly when a borrow out of the top bit happens; (r >> bits) & 1 is then 1.
    f = ((r >> bits) & CF) | ((a ^ b ^ res) & AF) | PARITY[res & 0xFF] | ((res >> sf_shift) & SF)
    if not res:
        f |= ZF
    if (a ^ b) & (a ^ res) & sign:
        f |= OF
    return res, (rflags & _KEEP) | f


def _add(size: int, a: int, b: int, rflags: int) -> tuple[int, int]:
    return _sum(size, a, b, 0, rflags)


def _adc(size: int, a: int, b: int, rflags: int) -> tuple[int, int]:
    return _sum(size, a, b, rflags & CF, rflags)


def _sub(size: int, a: int, b: int, rflags: int) -> tuple[int, int]:
    return _difference(size, a, b, 0, rflags)


def _sbb(size: int, a: int, b: int, rflags: int) -> tuple[int, int]:
    return _difference(size, a, b, rflags & CF, rflags)


def _logic_flags(res: int, sf_shift: int, rflags: int) -> int:
    """CF = OF = 0, AF = 0 (our choice, see module docstring), SF/ZF/PF from the result."""
    f = PARITY[res & 0xFF] | ((res >> sf_shift) & SF)
    if not res:
        f |= ZF
    return (rflags & _KEEP) | f


def _and(size: int, a: int, b: int, rflags: int) -> tuple[int, int]:
    mask, _, sf_shift, _ = _GEOM[size]
    res = a & b & mask
    return res, _logic_flags(res, sf_shift, rflags)


def _or(size: int, a: int, b: int, rflags: int) -> tuple[int, int]:
    mask, _, sf_shift, _ = _GEOM[size]
    res = (a | b) & mask
    return res, _logic_flags(res, sf_shift, rflags)


def _xor(size: int, a: int, b: int, rflags: int) -> tuple[int, int]:
    mask, _, sf_shift, _ = _GEOM[size]
    res = (a ^ b) & mask
    return res, _logic_flags(res, sf_shift, rflags)


ALU_TABLE: Final[tuple[AluFn, ...]] = (_add, _or, _adc, _sbb, _and, _sub, _xor, _sub)
"""Implementation per AluOp value; CMP shares SUB's (the caller does not write CMP's result)."""


def alu(op: int, size: int, a: int, b: int, rflags: int) -> tuple[int, int]:
    """Group-1 `op a, b`: (result masked to size, new rflags). For CMP the result is a - b, unused.

    ADC and SBB take the carry-in from CF in `rflags`. Hot callers may index ALU_TABLE themselves.
    """
    return ALU_TABLE[op](size, a, b, rflags)


def test(size: int, a: int, b: int, rflags: int) -> int:
    """TEST: the flags of AND, without a result."""
    mask, _, sf_shift, _ = _GEOM[size]
    return _logic_flags(a & b & mask, sf_shift, rflags)


def inc(size: int, a: int, rflags: int) -> tuple[int, int]:
    """INC: ADD 1 except that CF is preserved."""
    mask, sign, sf_shift, _ = _GEOM[size]
    res = (a + 1) & mask
    # Bit 4 of the result differs from bit 4 of a exactly when the low nibble carried out.
    f = ((a ^ res) & AF) | PARITY[res & 0xFF] | ((res >> sf_shift) & SF)
    if not res:
        f |= ZF
    if res == sign:
        f |= OF
    return res, (rflags & _KEEP_CF) | f


def dec(size: int, a: int, rflags: int) -> tuple[int, int]:
    """DEC: SUB 1 except that CF is preserved."""
    mask, sign, sf_shift, _ = _GEOM[size]
    a &= mask
    res = (a - 1) & mask
    f = ((a ^ res) & AF) | PARITY[res & 0xFF] | ((res >> sf_shift) & SF)
    if not res:
        f |= ZF
    if a == sign:
        f |= OF
    return res, (rflags & _KEEP_CF) | f


def neg(size: int, a: int, rflags: int) -> tuple[int, int]:
    """NEG: 0 - a with SUB's flags, so CF = (a != 0) and OF = (a == most negative value)."""
    mask, sign, sf_shift, _ = _GEOM[size]
    a &= mask
    res = -a & mask
    f = ((a ^ res) & AF) | PARITY[res & 0xFF] | ((res >> sf_shift) & SF)
    if a:
        f |= CF
    else:
        f |= ZF
    if a == sign:
        f |= OF
    return res, (rflags & _KEEP) | f


def bt_flags(rflags: int, bit_value: int) -> int:
    """BT/BTS/BTR/BTC: CF = the selected bit (bit 0 of `bit_value`, taken before any change).

    ZF is unaffected; OF, SF, AF and PF (undefined) are left unchanged, as the hardware does.
    """
    return (rflags & ~CF) | (bit_value & 1)
