"""Status-flag arithmetic of the integer instructions, bit-exact with the Intel SDM.

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

The helpers for shifts, multiplication, bit scans, conditions, ADX and BMI (below the ALU ones) return
the results too, and give the undefined flags the values of the Intel host the oracles run on.
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
    "ScanOp",
    "ShiftOp",
    "add_with_flag",
    "alu",
    "bmi_logic",
    "bt_flags",
    "condition",
    "dec",
    "double_shift",
    "inc",
    "multiply",
    "neg",
    "scan",
    "shift",
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


# --------------------------------------------------------------------------------------------------
# The rest of the integer instruction set: shifts and rotates, double shifts, multiplication, bit scans,
# conditions, BMI1/BMI2 and ADX. Where the SDM leaves a flag (or, for 16-bit SHLD/SHRD with a count
# above 16, the result) undefined, these produce what the Intel host the oracles run on produces (a
# Rocket Lake Xeon; tests/test_forms_integer.py checks every such choice against the host CPU):
#
# - shifts and rotates: OF for a masked count other than 1 is computed as for a count of 1 from the
#   original operand (SHL: MSB xor the next bit, SHR: the MSB, SAR: 0, ROL/RCL: like SHL, ROR: MSB xor
#   LSB, RCR: MSB xor CF); AF (shifts) is cleared; CF of SHL/SHR by the operand width or more is the bit
#   shifted out of the zero-extended value (so 0 beyond the width). RCL/RCR whose count is a multiple of
#   9 (bytes) or 17 (words) change no flag, as a count of 0 does.
# - SHLD/SHRD: OF as for a count of 1, AF cleared; 16-bit counts of 17-31 shift the 48-bit value
#   dest:src:dest (the results and flags of that extension are what the host computes).
# - MUL/IMUL: SF is the sign of the low half, PF its low byte's parity, ZF and AF are cleared.
# - DIV/IDIV: no flag changes (all six are undefined).
# - BSF/BSR: CF, OF, SF, AF cleared, PF from the index (a zero source: ZF and PF set, the destination
#   is not written at all, in 64-bit mode not even its upper half cleared).
# - TZCNT/LZCNT: OF, SF, AF, PF cleared.  ANDN/BEXTR/BLS*/BZHI: AF and PF cleared (BEXTR: SF from the
#   result).
# --------------------------------------------------------------------------------------------------


class ShiftOp(IntEnum):
    """Group-2 operation, numbered as ModRM.reg of opcodes C0, C1 and D0-D3 (/6 is an alias of SHL)."""

    ROL = 0
    ROR = 1
    RCL = 2
    RCR = 3
    SHL = 4
    SHR = 5
    SAL = 6
    SAR = 7


# One shift or rotate: (a, count >= 1, width in bits, CF in) -> (result, CF, OF), or None when the
# rotation changes nothing at all (RCL/RCR by a multiple of width + 1).
_ShiftFn = Callable[[int, int, int, int], tuple[int, int, int] | None]


def _of_left(a: int, bits: int) -> int:
    """OF of a 1-bit left shift or rotate: the sign changes."""
    return ((a >> (bits - 1)) ^ (a >> (bits - 2))) & 1


def _rol(a: int, c: int, bits: int, cf: int) -> tuple[int, int, int]:
    c %= bits
    r = ((a << c) | (a >> (bits - c))) & ((1 << bits) - 1)
    return r, r & 1, _of_left(a, bits)


def _ror(a: int, c: int, bits: int, cf: int) -> tuple[int, int, int]:
    c %= bits
    r = ((a >> c) | (a << (bits - c))) & ((1 << bits) - 1)
    return r, r >> (bits - 1), ((a >> (bits - 1)) ^ a) & 1


def _rcl(a: int, c: int, bits: int, cf: int) -> tuple[int, int, int] | None:
    c %= bits + 1
    if not c:
        return None
    v = cf << bits | a
    v = ((v << c) | (v >> (bits + 1 - c))) & ((2 << bits) - 1)
    return v & ((1 << bits) - 1), v >> bits, _of_left(a, bits)


def _rcr(a: int, c: int, bits: int, cf: int) -> tuple[int, int, int] | None:
    c %= bits + 1
    if not c:
        return None
    v = cf << bits | a
    v = ((v >> c) | (v << (bits + 1 - c))) & ((2 << bits) - 1)
    return v & ((1 << bits) - 1), v >> bits, ((a >> (bits - 1)) ^ cf) & 1


def _shl(a: int, c: int, bits: int, cf: int) -> tuple[int, int, int]:
    return (a << c) & ((1 << bits) - 1), (a << c >> bits) & 1, _of_left(a, bits)


def _shr(a: int, c: int, bits: int, cf: int) -> tuple[int, int, int]:
    return a >> c, (a >> (c - 1)) & 1, a >> (bits - 1)


def _sar(a: int, c: int, bits: int, cf: int) -> tuple[int, int, int]:
    s = a - (1 << bits) if a >> (bits - 1) else a
    return (s >> c) & ((1 << bits) - 1), (s >> (c - 1)) & 1, 0


# Per ShiftOp: the operation, and whether it writes SF/ZF/PF (and clears AF) besides CF and OF.
_SHIFTS: Final[tuple[tuple[_ShiftFn, bool], ...]] = (
    (_rol, False),
    (_ror, False),
    (_rcl, False),
    (_rcr, False),
    (_shl, True),
    (_shr, True),
    (_shl, True),
    (_sar, True),
)


def _result_flags(res: int, sf_shift: int) -> int:
    """SF, ZF and PF of a result (the other status flags clear)."""
    f = PARITY[res & 0xFF] | ((res >> sf_shift) & SF)
    if not res:
        f |= ZF
    return f


def shift(op: int, size: int, a: int, count: int, rflags: int) -> tuple[int, int]:
    """Group 2 `op a, count` (ROL..SAR): (result, new rflags).

    `count` is the instruction's count operand (1, CL or imm8); it is masked here to 5 bits (6 with
    64-bit operands). A masked count of 0 leaves the value and every flag as they were; rotates only
    ever change CF and OF.
    """
    mask, _, sf_shift, bits = _GEOM[size]
    a &= mask
    c = count & (0x3F if size == 8 else 0x1F)
    if not c:
        return a, rflags
    fn, arith = _SHIFTS[op]
    out = fn(a, c, bits, rflags & CF)
    if out is None:
        return a, rflags
    res, cf, of = out
    f = cf | (OF if of else 0)
    if arith:
        return res, (rflags & _KEEP) | f | _result_flags(res, sf_shift)
    return res, (rflags & ~(CF | OF)) | f


def double_shift(left: bool, size: int, dest: int, src: int, count: int, rflags: int) -> tuple[int, int]:
    """SHLD (`left`) or SHRD `dest, src, count` (size 2, 4 or 8): (result, new rflags).

    The count is masked to 5 bits (6 with 64-bit operands); a masked count of 0 changes nothing. Bits
    come in from `src`; a 16-bit operand shifts the 48-bit value dest:src:dest, which is what the CPU
    does for the (undefined) counts of 17 to 31.
    """
    mask, _, sf_shift, bits = _GEOM[size]
    dest &= mask
    src &= mask
    c = count & (0x3F if size == 8 else 0x1F)
    if not c:
        return dest, rflags
    if size == 2:
        wide, total = dest << 32 | src << 16 | dest, 48
    elif left:
        wide, total = dest << bits | src, 2 * bits
    else:
        wide, total = src << bits | dest, 2 * bits
    if left:
        shifted = wide << c
        res = (shifted >> (total - bits)) & mask
        cf = (shifted >> total) & 1
        of = _of_left(dest, bits)
    else:
        res = (wide >> c) & mask
        cf = (wide >> (c - 1)) & 1
        of = ((dest >> (bits - 1)) ^ src) & 1
    return res, (rflags & _KEEP) | cf | (OF if of else 0) | _result_flags(res, sf_shift)


def multiply(signed: bool, size: int, a: int, b: int, rflags: int) -> tuple[int, int, int]:
    """MUL (unsigned) or IMUL `a * b`: (low half, high half, new rflags), both halves masked to size.

    CF = OF = the product does not fit the low half (unsigned, or as a signed value for IMUL).
    """
    mask, sign, sf_shift, bits = _GEOM[size]
    a &= mask
    b &= mask
    if signed:
        a -= (a & sign) << 1
        b -= (b & sign) << 1
    p = a * b
    lo = p & mask
    over = (lo - ((lo & sign) << 1) != p) if signed else p > mask
    f = PARITY[lo & 0xFF] | ((lo >> sf_shift) & SF) | ((CF | OF) if over else 0)
    return lo, (p >> bits) & mask, (rflags & _KEEP) | f


class ScanOp(IntEnum):
    """Bit counting: BSF, BSR, TZCNT, LZCNT, POPCNT."""

    BSF = 0
    BSR = 1
    TZCNT = 2
    LZCNT = 3
    POPCNT = 4


def scan(op: int, size: int, src: int, rflags: int) -> tuple[int | None, int]:
    """`op` of `src`: (the result, or None when the destination is not written; new rflags)."""
    mask, _, _, bits = _GEOM[size]
    src &= mask
    low = (src & -src).bit_length() - 1  # -1 for 0
    f = 0
    res: int | None
    if op == ScanOp.BSF or op == ScanOp.BSR:
        res = (low if op == ScanOp.BSF else src.bit_length() - 1) if src else None
        f = PARITY[res & 0xFF] if res is not None else ZF | PF
    else:
        if op == ScanOp.TZCNT:
            res = low if src else bits
        elif op == ScanOp.LZCNT:
            res = bits - src.bit_length()
        else:
            res = src.bit_count()
        if op != ScanOp.POPCNT and not src:
            f = CF
        if not (src if op == ScanOp.POPCNT else res):
            f |= ZF
    return res, (rflags & _KEEP) | f


# Condition codes (the low nibble of Jcc/SETcc/CMOVcc): O NO B AE E NE BE A S NS P NP L GE LE G. Each
# even code is a predicate on RFLAGS; the odd code after it is its negation.
_CONDITIONS: Final[tuple[Callable[[int], bool], ...]] = (
    lambda f: bool(f & OF),
    lambda f: bool(f & CF),
    lambda f: bool(f & ZF),
    lambda f: bool(f & (CF | ZF)),
    lambda f: bool(f & SF),
    lambda f: bool(f & PF),
    lambda f: bool(f & SF) != bool(f & OF),
    lambda f: bool(f & ZF) or bool(f & SF) != bool(f & OF),
)


def condition(cc: int, rflags: int) -> bool:
    """Whether condition code `cc` (0-15) holds for `rflags`."""
    return _CONDITIONS[cc >> 1](rflags) != bool(cc & 1)


def add_with_flag(size: int, a: int, b: int, flag: int, rflags: int) -> tuple[int, int]:
    """ADCX (`flag` = CF) or ADOX (`flag` = OF): a + b + flag; the carry out goes to that flag only."""
    mask = _GEOM[size][0]
    r = (a & mask) + (b & mask) + (1 if rflags & flag else 0)
    return r & mask, (rflags & ~flag) | (flag if r > mask else 0)


def bmi_logic(size: int, res: int, cf: bool, rflags: int) -> int:
    """Flags of ANDN, BEXTR, BLSI, BLSMSK, BLSR and BZHI: SF and ZF from the result, CF as given, OF
    cleared (AF and PF, undefined, cleared as the host does)."""
    _, _, sf_shift, _ = _GEOM[size]
    f = (res >> sf_shift) & SF | (CF if cf else 0)
    if not res:
        f |= ZF
    return (rflags & _KEEP) | f
