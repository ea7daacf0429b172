"""Hypothesis strategies: one instruction of an emulated form plus a state that puts its operand in MMIO.

Every form of vmmio's emulation table gets random legal prefixes (66, 67, REX, segment overrides, LOCK
where legal, REP/REPE/REPNE for strings), random ModRM/SIB/displacement shapes and immediates. Register
values are drawn first (edge values mixed in) and the registers that form the address are then *solved*
so that the access lands where the case wants it: inside the MMIO window, or in the RAM area for the
other operand of a stack or string instruction. The same `Case` runs on vmmio, Unicorn and the host
CPU, all with the same flat, identity-mapped layout:

- WINDOW: the MMIO device (8 KiB, two pages); plain RAM holding the same bytes for the oracles.
- RAM: 8 KiB of guest RAM for stacks and string operands.
- CODE: the page holding the instruction (RIP-relative operands are relative to it).

Families: one per group of forms (mov, movx, xchg, alu, alu_imm, test, unary, bt, stack, string; and for
the rest of the integer instruction set atomic, shift, shxd, muldiv, condition, bitscan, bitcount,
extmove, crc32, adx, bmi), plus "lock_ud" (LOCK where it is illegal: #UD) and "too_long" (padded to
exactly 15 bytes, or past it: #GP). oracles/gen_ctl.py adds the stack, control-transfer, segment and
system families (stack_ops, branch, enter_leave, sreg, far, system), each case with the environment it
needs (a GDT, CPL 3 or 0). Flags a form leaves architecturally undefined are listed in
FLAG_MASKS and not compared (for shifts and rotates, per case by the count: `count_undefined`).

Forms with a mandatory prefix (TZCNT, CRC32, ADCX...) always get it; VEX forms (BMI) get a C4 prefix
built from the drawn REX bits, a random VEX.vvvv and only the prefixes that may precede VEX. Operands
are shaped where the interesting outcome is unlikely at random (`shape_values`): a CMPXCHG* compare
that succeeds, a division whose quotient fits, a zero bit-scan source. CMPXCHG16B operands are 16-byte
aligned, or now and then not (#GP(0) expected). Results the SDM leaves undefined that vmmio gives as the
Intel host does (BSF/BSR with a zero source, 16-bit SHLD/SHRD by 17-31) are compared; where an engine
differs, its tables (oracles/known.py, oracles_kvm/deviations.py) say so.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from enum import Enum, auto

from hypothesis import assume
from hypothesis import strategies as st

from vmmio.x86.regs import AF, CF, DF, GPR_NAMES, OF, PF, SF, ZF
from vmmio.x86.state import VectorState

WINDOW = 0x4000_0000
WINDOW_SIZE = 0x2000
RAM = 0x20_0000
RAM_SIZE = 0x2000
CODE = 0x30_0000
PAGE = 0x1000
LINE = 64  # cache line: locked accesses are kept inside one (split locks trap or crawl on some hosts)

RFLAGS_FIXED = 0x2
STATUS = CF | PF | AF | ZF | SF | OF
MASK64 = (1 << 64) - 1
RSP = 4
NO_REG = -1
RIP = -2
NULL_SEGS = {"es": 0x26, "cs": 0x2E, "ss": 0x36, "ds": 0x3E}
SEG_PREFIX = {**NULL_SEGS, "fs": 0x64, "gs": 0x65}

LOGIC_UNDEFINED = "AF is undefined after AND/OR/XOR/TEST (SDM vol. 2; vmmio clears it)"
BT_UNDEFINED = "OF/SF/AF/PF are undefined after BT/BTS/BTR/BTC (SDM vol. 2; CF is the bit, ZF unaffected)"
ROTATE_UNDEFINED = (
    "OF is undefined after a rotate by a masked count other than 1 (a count of 0 changes nothing)"
)
SHIFT_UNDEFINED = (
    "after a shift by a masked count other than 0: AF is undefined, OF unless the count is 1, and CF for "
    "SHL/SHR by the operand width or more (bytes and words)"
)
DOUBLE_SHIFT_UNDEFINED = (
    "after SHLD/SHRD by a masked count other than 0: AF is undefined, OF unless the count is 1; a 16-bit "
    "count above 16 leaves the result and all flags undefined"
)


FLAG_MASKS: dict[str, tuple[int, str]] = {
    "and": (AF, LOGIC_UNDEFINED),
    "or": (AF, LOGIC_UNDEFINED),
    "xor": (AF, LOGIC_UNDEFINED),
    "test": (AF, LOGIC_UNDEFINED),
    "bt": (OF | SF | AF | PF, BT_UNDEFINED),
    "bts": (OF | SF | AF | PF, BT_UNDEFINED),
    "btr": (OF | SF | AF | PF, BT_UNDEFINED),
    "btc": (OF | SF | AF | PF, BT_UNDEFINED),
    # --- the rest of the integer instruction set (see `count_undefined` for the count-dependent ones)
    **dict.fromkeys(("rol", "ror", "rcl", "rcr"), (OF, ROTATE_UNDEFINED)),
    **dict.fromkeys(("shl", "sal", "shr"), (CF | OF | AF, SHIFT_UNDEFINED)),
    "sar": (OF | AF, SHIFT_UNDEFINED),
    **dict.fromkeys(("shld", "shrd"), (CF | PF | AF | ZF | SF | OF, DOUBLE_SHIFT_UNDEFINED)),
    **dict.fromkeys(
        ("mul", "imul"), (SF | ZF | AF | PF, "SF/ZF/AF/PF are undefined after MUL/IMUL (SDM vol. 2)")
    ),
    **dict.fromkeys(("div", "idiv"), (CF | PF | AF | ZF | SF | OF, "all six are undefined after DIV/IDIV")),
    **dict.fromkeys(("bsf", "bsr"), (CF | OF | SF | AF | PF, "only ZF is defined after BSF/BSR")),
    **dict.fromkeys(("tzcnt", "lzcnt"), (OF | SF | AF | PF, "OF/SF/AF/PF are undefined after TZCNT/LZCNT")),
    **dict.fromkeys(("andn", "blsi", "blsmsk", "blsr", "bzhi"), (AF | PF, "AF/PF are undefined (BMI1/BMI2)")),
    "bextr": (AF | SF | PF, "AF/SF/PF are undefined after BEXTR"),
}
"""Status flags the SDM leaves undefined, per mnemonic, with the reason; every other emulated form
defines all six (ADD..CMP, NEG, INC/DEC, CMPS/SCAS, CMPXCHG, XADD, POPCNT) or leaves them unchanged
(MOV*, XCHG, NOT, PUSH, POP, MOVS/STOS/LODS, SETcc, CMOVcc, MOVBE, MOVNTI, CRC32, PDEP/PEXT, MULX,
RORX, SARX/SHLX/SHRX) or defines the ones it changes (CMPXCHG8B/16B: ZF; ADCX: CF; ADOX: OF), and
those are compared bit for bit. vmmio's values for the undefined ones are the Intel host's
(vmmio/x86/flags.py; tests/test_forms_integer.py checks them on the host)."""


class Kind(Enum):
    """What the instruction does with memory, in order."""

    LOAD = auto()  # reads the r/m operand (CMP, TEST, BT and the reg <- r/m forms too)
    STORE = auto()  # writes it
    RMW = auto()  # reads, then writes it (XCHG too)
    PUSH = auto()  # reads the operand, writes the stack
    POP = auto()  # reads the stack, writes the operand
    MOFFS_LOAD = auto()
    MOFFS_STORE = auto()
    MOVS = auto()
    STOS = auto()
    LODS = auto()
    CMPS = auto()
    SCAS = auto()


STRING_KINDS = (Kind.MOVS, Kind.STOS, Kind.LODS, Kind.CMPS, Kind.SCAS)


@dataclass(frozen=True)
class Spec:
    """One emulated form. `name` may use {w} (operand bits), {m} (memory bits), {i} (imm bits), {s}."""

    name: str
    family: str
    opcode: bytes
    kind: Kind
    width: str  # "b" byte, "v" 16/32/64 by 66/REX.W, "s" stack 16/64
    group: int | None = None  # fixed ModRM.reg
    imm: str = ""  # "", "ib", "iz"
    lock: bool = False  # LOCK legal with a memory operand
    locked: bool = False  # implicitly locked (XCHG)
    mem_size: int = 0  # 0: the operand size; 1, 2, 4: fixed
    bit: str = ""  # "reg" / "imm" for the bit-test forms
    # The rest of the integer instruction set: a mandatory prefix (66, F2, F3); a VEX encoding (map select,
    # pp, vvvv or -1 for any); no register form; how `shape_values` picks operands; where the count is.
    prefix: int = 0
    vex: tuple[int, int, int] | None = None
    mem_only: bool = False
    shaper: str = ""  # "zero", "acc", "pair", "div", "idiv"
    count: str = ""  # "one", "cl", "imm" for shifts and rotates (their undefined flags depend on it)

    @property
    def mnemonic(self) -> str:
        words = self.name.split()
        return words[1] if words[0] in ("rep", "repe", "repne", "rep(f2)") else words[0]

    @property
    def undefined(self) -> int:
        """Architecturally undefined status flags (not compared)."""
        return FLAG_MASKS.get(self.mnemonic, (0, ""))[0]

    @property
    def reason(self) -> str:
        return FLAG_MASKS.get(self.mnemonic, (0, ""))[1]


def _build_specs() -> list[Spec]:
    S, L, W, M = Spec, Kind.LOAD, Kind.STORE, Kind.RMW
    s: list[Spec] = []
    for n, op in enumerate(("add", "or", "adc", "sbb", "and", "sub", "xor", "cmp")):
        dst, lk = (L, False) if op == "cmp" else (M, True)
        s += [
            S(f"{op} r/m8, r8", "alu", bytes([n * 8]), dst, "b", lock=lk),
            S(f"{op} r/m{{w}}, r{{w}}", "alu", bytes([n * 8 + 1]), dst, "v", lock=lk),
            S(f"{op} r8, r/m8", "alu", bytes([n * 8 + 2]), L, "b"),
            S(f"{op} r{{w}}, r/m{{w}}", "alu", bytes([n * 8 + 3]), L, "v"),
            S(f"{op} r/m8, imm8", "alu_imm", b"\x80", dst, "b", n, "ib", lk),
            S(f"{op} r/m{{w}}, imm{{i}}", "alu_imm", b"\x81", dst, "v", n, "iz", lk),
            S(f"{op} r/m{{w}}, imm8", "alu_imm", b"\x83", dst, "v", n, "ib", lk),
        ]
    s += [
        S("test r/m8, r8", "test", b"\x84", L, "b"),
        S("test r/m{w}, r{w}", "test", b"\x85", L, "v"),
        S("test r/m8, imm8", "test", b"\xf6", L, "b", 0, "ib"),
        S("test r/m{w}, imm{i}", "test", b"\xf7", L, "v", 0, "iz"),
        S("test r/m8, imm8 (/1 alias)", "test", b"\xf6", L, "b", 1, "ib"),
        S("test r/m{w}, imm{i} (/1 alias)", "test", b"\xf7", L, "v", 1, "iz"),
    ]
    for reg, op, ops in (
        (2, "not", b"\xf6\xf7"),
        (3, "neg", b"\xf6\xf7"),
        (0, "inc", b"\xfe\xff"),
        (1, "dec", b"\xfe\xff"),
    ):
        s += [
            S(f"{op} r/m8", "unary", ops[:1], M, "b", reg, lock=True),
            S(f"{op} r/m{{w}}", "unary", ops[1:], M, "v", reg, lock=True),
        ]
    s += [
        S("mov r/m8, r8", "mov", b"\x88", W, "b"),
        S("mov r/m{w}, r{w}", "mov", b"\x89", W, "v"),
        S("mov r8, r/m8", "mov", b"\x8a", L, "b"),
        S("mov r{w}, r/m{w}", "mov", b"\x8b", L, "v"),
        S("mov r/m8, imm8", "mov", b"\xc6", W, "b", 0, "ib"),
        S("mov r/m{w}, imm{i}", "mov", b"\xc7", W, "v", 0, "iz"),
        S("mov al, moffs8", "mov", b"\xa0", Kind.MOFFS_LOAD, "b"),
        S("mov {a}, moffs{w}", "mov", b"\xa1", Kind.MOFFS_LOAD, "v"),
        S("mov moffs8, al", "mov", b"\xa2", Kind.MOFFS_STORE, "b"),
        S("mov moffs{w}, {a}", "mov", b"\xa3", Kind.MOFFS_STORE, "v"),
        S("movzx r{w}, r/m8", "movx", b"\x0f\xb6", L, "v", mem_size=1),
        S("movzx r{w}, r/m16", "movx", b"\x0f\xb7", L, "v", mem_size=2),
        S("movsx r{w}, r/m8", "movx", b"\x0f\xbe", L, "v", mem_size=1),
        S("movsx r{w}, r/m16", "movx", b"\x0f\xbf", L, "v", mem_size=2),
        S("movsxd r{w}, r/m32", "movx", b"\x63", L, "v", mem_size=4),  # a dword at every size
        S("xchg r/m8, r8", "xchg", b"\x86", M, "b", lock=True, locked=True),
        S("xchg r/m{w}, r{w}", "xchg", b"\x87", M, "v", lock=True, locked=True),
    ]
    for n, op in enumerate(("bt", "bts", "btr", "btc")):
        k, lk = (L, False) if op == "bt" else (M, True)
        s += [
            S(f"{op} r/m{{w}}, r{{w}}", "bt", bytes([0x0F, 0xA3 + 8 * n]), k, "v", lock=lk, bit="reg"),
            S(f"{op} r/m{{w}}, imm8", "bt", b"\x0f\xba", k, "v", 4 + n, "ib", lk, bit="imm"),
        ]
    s += [
        S("push r/m{w}", "stack", b"\xff", Kind.PUSH, "s", 6),
        S("pop r/m{w}", "stack", b"\x8f", Kind.POP, "s", 0),
    ]
    strings = (
        ("movs", 0xA4, Kind.MOVS, ("", "rep ", "rep(f2) ")),
        ("stos", 0xAA, Kind.STOS, ("", "rep ", "rep(f2) ")),
        ("lods", 0xAC, Kind.LODS, ("", "rep ", "rep(f2) ")),
        ("cmps", 0xA6, Kind.CMPS, ("", "repe ", "repne ")),
        ("scas", 0xAE, Kind.SCAS, ("", "repe ", "repne ")),
    )
    for op, base, kind, reps in strings:
        for rep in reps:
            s += [
                S(f"{rep}{op}b", "string", bytes([base]), kind, "b"),
                S(f"{rep}{op}{{s}}", "string", bytes([base + 1]), kind, "v"),
            ]
    return s


# --------------------------------------------------------------------------------------------------
# The rest of the integer instruction set
# --------------------------------------------------------------------------------------------------

_CC = ("o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le", "g")
_SHIFTS = ("rol", "ror", "rcl", "rcr", "shl", "shr", "sal", "sar")
VEX_0F38, VEX_0F3A = 2, 3  # VEX map select
NP, P66, PF3, PF2 = range(4)  # VEX.pp


def _integer_specs() -> list[Spec]:
    S, L, W, M = Spec, Kind.LOAD, Kind.STORE, Kind.RMW
    s: list[Spec] = [
        S("cmpxchg r/m8, r8", "atomic", b"\x0f\xb0", M, "b", lock=True, shaper="acc"),
        S("cmpxchg r/m{w}, r{w}", "atomic", b"\x0f\xb1", M, "v", lock=True, shaper="acc"),
        S("cmpxchg{n}b m{m}", "atomic", b"\x0f\xc7", M, "dq", 1, lock=True, mem_only=True, shaper="pair"),
        S("xadd r/m8, r8", "atomic", b"\x0f\xc0", M, "b", lock=True),
        S("xadd r/m{w}, r{w}", "atomic", b"\x0f\xc1", M, "v", lock=True),
    ]
    for n, op in enumerate(_SHIFTS):
        s += [
            S(f"{op} r/m8, imm8", "shift", b"\xc0", M, "b", n, "ib", count="imm"),
            S(f"{op} r/m{{w}}, imm8", "shift", b"\xc1", M, "v", n, "ib", count="imm"),
            S(f"{op} r/m8, 1", "shift", b"\xd0", M, "b", n, count="one"),
            S(f"{op} r/m{{w}}, 1", "shift", b"\xd1", M, "v", n, count="one"),
            S(f"{op} r/m8, cl", "shift", b"\xd2", M, "b", n, count="cl"),
            S(f"{op} r/m{{w}}, cl", "shift", b"\xd3", M, "v", n, count="cl"),
        ]
    for op, base in (("shld", 0xA4), ("shrd", 0xAC)):
        s += [
            S(f"{op} r/m{{w}}, r{{w}}, imm8", "shxd", bytes([0x0F, base]), M, "v", imm="ib", count="imm"),
            S(f"{op} r/m{{w}}, r{{w}}, cl", "shxd", bytes([0x0F, base + 1]), M, "v", count="cl"),
        ]
    for n, op in enumerate(("mul", "imul", "div", "idiv")):
        shaper = ("", "", "div", "idiv")[n]
        s += [
            S(f"{op} r/m8", "muldiv", b"\xf6", L, "b", 4 + n, shaper=shaper),
            S(f"{op} r/m{{w}}", "muldiv", b"\xf7", L, "v", 4 + n, shaper=shaper),
        ]
    s += [
        S("imul r{w}, r/m{w}", "muldiv", b"\x0f\xaf", L, "v"),
        S("imul r{w}, r/m{w}, imm{i}", "muldiv", b"\x69", L, "v", imm="iz"),
        S("imul r{w}, r/m{w}, imm8", "muldiv", b"\x6b", L, "v", imm="ib"),
    ]
    for n, cc in enumerate(_CC):
        s += [
            S(f"set{cc} r/m8", "condition", bytes([0x0F, 0x90 + n]), W, "b"),
            S(f"cmov{cc} r{{w}}, r/m{{w}}", "condition", bytes([0x0F, 0x40 + n]), L, "v"),
        ]
    s += [
        S("bsf r{w}, r/m{w}", "bitscan", b"\x0f\xbc", L, "v", shaper="zero"),
        S("bsr r{w}, r/m{w}", "bitscan", b"\x0f\xbd", L, "v", shaper="zero"),
        S("tzcnt r{w}, r/m{w}", "bitcount", b"\x0f\xbc", L, "v", prefix=0xF3, shaper="zero"),
        S("lzcnt r{w}, r/m{w}", "bitcount", b"\x0f\xbd", L, "v", prefix=0xF3, shaper="zero"),
        S("popcnt r{w}, r/m{w}", "bitcount", b"\x0f\xb8", L, "v", prefix=0xF3, shaper="zero"),
        S("movbe r{w}, m{w}", "extmove", b"\x0f\x38\xf0", L, "v", mem_only=True),
        S("movbe m{w}, r{w}", "extmove", b"\x0f\x38\xf1", W, "v", mem_only=True),
        S("movnti m{w}, r{w}", "extmove", b"\x0f\xc3", W, "y", mem_only=True),
        S("crc32 r{w}, r/m8", "crc32", b"\x0f\x38\xf0", L, "y", prefix=0xF2, mem_size=1),
        S("crc32 r, r/m{w}", "crc32", b"\x0f\x38\xf1", L, "v", prefix=0xF2),
        S("adcx r{w}, r/m{w}", "adx", b"\x0f\x38\xf6", L, "y", prefix=0x66),
        S("adox r{w}, r/m{w}", "adx", b"\x0f\x38\xf6", L, "y", prefix=0xF3),
    ]
    vex = (
        ("andn r{w}, r{w}, r/m{w}", VEX_0F38, 0xF2, NP, None),
        ("blsr r{w}, r/m{w}", VEX_0F38, 0xF3, NP, 1),
        ("blsmsk r{w}, r/m{w}", VEX_0F38, 0xF3, NP, 2),
        ("blsi r{w}, r/m{w}", VEX_0F38, 0xF3, NP, 3),
        ("bzhi r{w}, r/m{w}, r{w}", VEX_0F38, 0xF5, NP, None),
        ("pext r{w}, r{w}, r/m{w}", VEX_0F38, 0xF5, PF3, None),
        ("pdep r{w}, r{w}, r/m{w}", VEX_0F38, 0xF5, PF2, None),
        ("mulx r{w}, r{w}, r/m{w}", VEX_0F38, 0xF6, PF2, None),
        ("bextr r{w}, r/m{w}, r{w}", VEX_0F38, 0xF7, NP, None),
        ("shlx r{w}, r/m{w}, r{w}", VEX_0F38, 0xF7, P66, None),
        ("sarx r{w}, r/m{w}, r{w}", VEX_0F38, 0xF7, PF3, None),
        ("shrx r{w}, r/m{w}, r{w}", VEX_0F38, 0xF7, PF2, None),
    )
    for name, select, opcode, pp, group in vex:
        s.append(S(name, "bmi", bytes([opcode]), L, "y", group, vex=(select, pp, -1), shaper="zero"))
    s.append(S("rorx r{w}, r/m{w}, imm8", "bmi", b"\xf0", L, "y", imm="ib", vex=(VEX_0F3A, PF2, 0)))
    return s


def count_undefined(spec: Spec, opsize: int, count: int) -> int:
    """The undefined flags of a shift, rotate or double shift by `count` (FLAG_MASKS has the most a form
    can leave undefined; a count of 0 changes no flag, a count of 1 defines OF, and so on)."""
    if not spec.count:
        return spec.undefined
    c = count & (0x3F if opsize == 8 else 0x1F)
    mnemonic = spec.mnemonic
    if not c:
        return 0
    if mnemonic in ("shld", "shrd"):
        return (AF | (0 if c == 1 else OF)) if c <= 8 * opsize else STATUS
    undefined = spec.undefined & ~(OF if c == 1 else 0)
    if mnemonic in ("shl", "sal", "shr") and c < 8 * opsize:
        undefined &= ~CF
    return undefined


def _count(spec: Spec, b: Built, imm: bytes) -> int:
    return {"one": 1, "cl": b.gprs[1] & 0xFF, "imm": imm[0] if imm else 0}.get(spec.count, 0)


def _quotient_fits(signed: bool, size: int, dividend: int, divisor: int) -> bool:
    bits = 8 * size
    if signed:
        dividend -= (dividend >> (2 * bits - 1)) << (2 * bits)
        divisor -= (divisor >> (bits - 1)) << bits
    if not divisor:
        return False
    q = abs(dividend) // abs(divisor)
    return q < (1 << (bits - 1)) + ((dividend < 0) != (divisor < 0)) if signed else q < 1 << bits


def shape_values(
    spec: Spec, rng: Rng, b: Built, target: int, reg_value: int, msize: int, opsize: int, seed: int
) -> frozenset[str]:
    """Operand values that make the outcomes worth testing likely: a compare that succeeds (CMPXCHG*), a
    division that does not overflow, a zero source (bit scans). `target` is the memory operand's
    address, or -1 for a register form whose source holds `reg_value`. Returns the tags "zero-source"
    and "compare-equal" when the case has those traits."""
    if not spec.shaper:
        return frozenset()
    mask = (1 << 8 * msize) - 1
    value = reg_value & mask
    half = 4 * msize
    expected = (b.gprs[2] & ((1 << half) - 1)) << half | (b.gprs[0] & ((1 << half) - 1))
    accumulator = expected if spec.shaper == "pair" else b.gprs[0] & mask
    if target >= 0:
        r = rng.random()
        new: int | None = None
        if spec.shaper == "zero" and r < 0.25:
            new = 0
        elif spec.shaper in ("acc", "pair") and r < 0.5:
            new = accumulator
        elif spec.shaper in ("div", "idiv") and r < 0.8:
            bits = 8 * opsize
            lo = b.gprs[0] & ((1 << bits) - 1)
            dividend = b.gprs[0] & 0xFFFF if opsize == 1 else (b.gprs[2] & ((1 << bits) - 1)) << bits | lo
            for _ in range(8):
                new = rng.sized(opsize)
                if _quotient_fits(spec.shaper == "idiv", opsize, dividend, new):
                    break
        if new is not None:
            b.patches.append((target, (new & mask).to_bytes(msize, "little")))
        region, size, salt = (WINDOW, WINDOW_SIZE, 0) if target >= WINDOW else (RAM, RAM_SIZE, 1)
        at = target - region
        value = int.from_bytes(fill(seed, tuple(b.patches), region, size, salt)[at : at + msize], "little")
    if spec.shaper == "zero" and not value:
        return frozenset({"zero-source"})
    if spec.shaper in ("acc", "pair") and value == accumulator:
        return frozenset({"compare-equal"})
    return frozenset()


SPECS: list[Spec] = _build_specs() + _integer_specs()
FAMILIES: tuple[str, ...] = (
    "mov",
    "movx",
    "xchg",
    "alu",
    "alu_imm",
    "test",
    "unary",
    "bt",
    "stack",
    "string",
    "lock_ud",
    "too_long",
    # the rest of the integer instruction set
    "atomic",
    "shift",
    "shxd",
    "muldiv",
    "condition",
    "bitscan",
    "bitcount",
    "extmove",
    "crc32",
    "adx",
    "bmi",
    # oracles/gen_ctl.py
    "stack_ops",
    "branch",
    "enter_leave",
    "sreg",
    "far",
    "system",
)


CTL_FAMILIES = FAMILIES[FAMILIES.index("stack_ops") :]  # generated by oracles/gen_ctl.py


def specs_of(family: str) -> list[Spec]:
    return [s for s in SPECS if s.family == family]


def rep_prefix(spec: Spec) -> int:
    """The F2/F3 byte a string spec's name asks for (0: none)."""
    if spec.name.startswith(("rep ", "repe ")):
        return 0xF3
    if spec.name.startswith(("rep(f2) ", "repne ")):
        return 0xF2
    return 0


# --------------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Access:
    """One architectural memory access: linear (= guest-physical) address, size, direction."""

    addr: int
    size: int
    write: bool


def fill(seed: int, patches: tuple[tuple[int, bytes], ...], base: int, size: int, salt: int) -> bytes:
    """The bytes of a region (window: salt 0, RAM area: salt 1): the seed's fill, then the patches."""
    buf = bytearray(random.Random(seed * 2 + salt).randbytes(size))
    for addr, data in patches:
        for n, byte in enumerate(data):
            if base <= addr + n < base + size:
                buf[addr + n - base] = byte
    return bytes(buf)


@dataclass(frozen=True)
class Case:
    """One instruction with its complete input state, runnable on every oracle."""

    form: str
    family: str
    code: bytes
    gprs: tuple[int, ...]
    rflags: int
    fs_base: int
    gs_base: int
    seed: int  # fills WINDOW and RAM before `patches` are applied
    patches: tuple[tuple[int, bytes], ...]  # (address, bytes) written over the fill
    fault_gpa: int  # the first MMIO access, as the hardware would report it
    accesses: tuple[Access, ...]  # in order, for one execution (one iteration for strings)
    strides: tuple[int, ...] = ()  # per access: address step per further iteration (strings)
    rep: bool = False
    addr_size: int = 8
    undefined: int = 0
    reason: str = ""
    note: str = ""  # how the operand was placed, for reports
    tags: frozenset[str] = frozenset()  # encoding traits some oracle needs to know about (see `tags_of`)
    expect: str = ""  # the exception the instruction raises instead of executing ("#UD", "#GP"), if any
    # Vector cases (tests/oracles/gen_vector.py): the vector registers before, run at CPL 3 with SSE, AVX
    # and AVX-512 state enabled (see tests/oracles/vector_state.py); None for the integer families.
    vector: VectorState | None = None
    # The stack, control-transfer, segment and system families (oracles/gen_ctl.py):
    env: str = ""  # "": flat CPL 0; "user"/"kernel": CPL 3/0 under gen_ctl.ORACLE_GDT (a Linux process's)
    next_rip: int = 0  # where the instruction goes (control transfers); 0: just past it
    extra_flags: int = 0  # RFLAGS bits compared besides the status flags and DF (POPF, IRET)

    def _fill(self, base: int, size: int, salt: int) -> bytes:
        return fill(self.seed, self.patches, base, size, salt)

    def window(self) -> bytes:
        return self._fill(WINDOW, WINDOW_SIZE, 0)

    def ram(self) -> bytes:
        return self._fill(RAM, RAM_SIZE, 1)

    def with_tags(self, tags: frozenset[str]) -> Case:
        return replace(self, tags=self.tags | tags) if tags else self

    def expected_accesses(self, iterations: int) -> list[Access]:
        """All accesses of `iterations` executions (string instructions step their addresses)."""
        out: list[Access] = []
        strides = self.strides or (0,) * len(self.accesses)
        for k in range(iterations):
            for a, step in zip(self.accesses, strides, strict=True):
                out.append(Access(a.addr + k * step, a.size, a.write))
        return out

    def describe(self) -> str:
        regs = " ".join(f"{GPR_NAMES[8][n]}={v:#x}" for n, v in enumerate(self.gprs))
        flags = " ".join(name for name, bit in FLAG_NAMES.items() if self.rflags & bit) or "-"
        patches = ", ".join(f"{a:#x}:{d.hex()}" for a, d in self.patches[:8]) or "-"
        if len(self.patches) > 8:
            patches += f" and {len(self.patches) - 8} more"
        return (
            f"form {self.form!r}  bytes {self.code.hex()}\n"
            f"  {regs}\n"
            f"  rflags {self.rflags:#x} ({flags})  fs_base {self.fs_base:#x}  gs_base {self.gs_base:#x}\n"
            f"  memory seed {self.seed}  patches {patches}\n"
            f"  fault gpa {self.fault_gpa:#x}  planned accesses "
            + (", ".join(f"{'W' if a.write else 'R'}{a.size}@{a.addr:#x}" for a in self.accesses) or "-")
            + (f"  ({self.note})" if self.note else "")
            + (f"  [{', '.join(sorted(self.tags))}]" if self.tags else "")
        )


FLAG_NAMES = {"CF": CF, "PF": PF, "AF": AF, "ZF": ZF, "SF": SF, "OF": OF, "DF": DF}


# --------------------------------------------------------------------------------------------------
# Value strategies
# --------------------------------------------------------------------------------------------------

EDGE64 = (
    0,
    1,
    2,
    0x7F,
    0x80,
    0xFF,
    0x7FFF,
    0x8000,
    0xFFFF,
    0x7FFF_FFFF,
    0x8000_0000,
    0xFFFF_FFFF,
    0x1_0000_0000,
    0x7FFF_FFFF_FFFF_FFFF,
    0x8000_0000_0000_0000,
    MASK64,
    MASK64 - 1,
)


def _sext(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


class Rng(random.Random):
    """Data values of a case. Hypothesis draws the structure (form, prefixes, ModRM, placement) and
    one seed for this generator: drawing every value through Hypothesis costs ~0.1 ms per draw."""

    def reg(self) -> int:
        """A 64-bit register value: an edge value half of the time."""
        return self.choice(EDGE64) if self.random() < 0.5 else self.getrandbits(64)

    def sized(self, size: int) -> int:
        """A value of one operand width: 0, 1, max/min signed, all ones, or random."""
        bits = 8 * size
        if self.random() < 0.5:
            return self.choice(
                (0, 1, (1 << (bits - 1)) - 1, 1 << (bits - 1), (1 << bits) - 1, (1 << bits) - 2)
            )
        return self.getrandbits(bits)

    def upper(self) -> int:
        """Upper 32 bits that a 32-bit address must ignore."""
        return self.choice((0, 1, 0xFFFF_FFFF, 0x8000_0000)) if self.random() < 0.3 else self.getrandbits(32)

    def rflags(self) -> int:
        return RFLAGS_FIXED | (self.getrandbits(12) & (STATUS | DF))

    def seg_base(self) -> int:
        """FS/GS base: user-space values only (the host kernel refuses others)."""
        r = self.random()
        if r < 0.4:
            return 0
        if r < 0.6:
            return self.choice((0x1000, WINDOW - 0x1000, WINDOW, 0x7FFF_FFFF_E000))
        return self.randrange(0, (1 << 47) - 0x2000)

    def disp32(self) -> int:
        if self.random() < 0.3:
            return self.choice((0, 1, -1, 0x7FFF_FFFF, -(1 << 31), 0x1000, -0x1000))
        return self.randrange(-(1 << 31), 1 << 31)


seg_choices = st.sampled_from(
    (
        (),
        (),
        (),
        ("fs",),
        ("gs",),
        ("fs",),
        ("gs",),
        ("ds",),
        ("es",),
        ("ss",),
        ("cs",),
        ("fs", "gs"),
        ("ds", "fs"),
        ("gs", "ds"),
    )
)


SEG_BY_BYTE = {v: k for k, v in SEG_PREFIX.items()}


@dataclass
class Prefixes:
    """Legacy prefixes in encoding order, then the REX byte (if any) directly before the opcode."""

    order: list[int] = field(default_factory=list)
    rex: int = 0  # effective REX (0x40-0x4F) or 0
    stale_rex: int = 0  # a REX followed by a legacy prefix: ignored by the CPU
    vex: tuple[int, int, int] | None = (
        None  # (map select, pp, vvvv): a C4 VEX prefix carrying `rex`'s W/R/X/B
    )

    @property
    def osz(self) -> bool:
        return 0x66 in self.order

    @property
    def asz(self) -> bool:
        return 0x67 in self.order

    @property
    def lock(self) -> bool:
        return 0xF0 in self.order

    @property
    def seg(self) -> str | None:
        """The override that adds a base: the last FS/GS one. In 64-bit mode ES/CS/SS/DS overrides are
        null prefixes that do not displace an earlier FS/GS (the host CPU's behaviour; QEMU differs)."""
        segs = [SEG_BY_BYTE[b] for b in self.order if b in (0x64, 0x65)]
        return segs[-1] if segs else None

    @property
    def null_after_fs_gs(self) -> bool:
        """A null segment prefix follows the FS/GS one (Unicorn lets it win: see the Unicorn test)."""
        last = [b for b in self.order if b in SEG_BY_BYTE]
        return bool(last) and last[-1] in NULL_SEGS.values() and self.seg is not None

    def encode(self) -> bytes:
        if self.vex is not None:
            select, pp, vvvv = self.vex
            rxb = (~self.rex & 7) << 5  # R, X, B inverted in bits 7, 6, 5
            return bytes([*self.order, 0xC4, rxb | select, (self.rex & 8) << 4 | (~vvvv & 15) << 3 | pp])
        stale = bytes([self.stale_rex]) if self.stale_rex else b""
        return stale + bytes(self.order) + (bytes([self.rex]) if self.rex else b"")


def prefixes(draw: st.DrawFn, rng: Rng, *, lock_ok: bool, rep: int = 0, lock: bool = False) -> Prefixes:
    """Random legal prefixes in random order; a stale REX (before a legacy prefix) now and then."""
    legacy = [SEG_PREFIX[s] for s in draw(seg_choices)]
    if draw(st.booleans()):
        legacy.append(0x66)
    if draw(st.sampled_from((False, False, True))):
        legacy.append(0x67)
    if lock or (lock_ok and draw(st.sampled_from((False, False, True)))):
        legacy.append(0xF0)
    if rep:
        legacy.append(rep)
    rng.shuffle(legacy)
    p = Prefixes(order=legacy)
    if draw(st.booleans()):
        p.rex = rng.randrange(0x40, 0x50)
    if p.order and rng.random() < 0.2:
        p.stale_rex = rng.randrange(0x40, 0x50)
    return p


def spec_prefixes(draw: st.DrawFn, rng: Rng, spec: Spec, *, lock_ok: bool, lock: bool) -> Prefixes:
    """`prefixes` for one form: its mandatory prefix always present, no 66 for the forms sized by REX.W
    alone, and for VEX forms only what may precede VEX (segment overrides, 67; LOCK only to be #UD)."""
    if spec.vex is not None:
        order = [SEG_PREFIX[s] for s in draw(seg_choices)]
        if draw(st.sampled_from((False, False, True))):
            order.append(0x67)
        if lock:
            order.append(0xF0)
        rng.shuffle(order)
        select, pp, vvvv = spec.vex
        return Prefixes(
            order, 0x40 | rng.randrange(16), vex=(select, pp, rng.randrange(16) if vvvv < 0 else vvvv)
        )
    rep = spec.prefix if spec.prefix in (0xF2, 0xF3) else 0
    p = prefixes(draw, rng, lock_ok=lock_ok, rep=rep, lock=lock)
    if spec.width == "y":
        p.order = [b for b in p.order if b != 0x66]
    if spec.prefix == 0x66 and not p.osz:
        p.order.insert(rng.randrange(len(p.order) + 1), 0x66)
    return p


def trim(p: Prefixes, length: int) -> None:
    """Drop optional prefixes until the instruction fits in 15 bytes (longer ones raise #GP)."""
    while length > 15:
        segs = [b for b in p.order if b in SEG_BY_BYTE]
        if p.stale_rex:
            p.stale_rex = 0
        elif segs:
            p.order.remove(segs[0])
        elif p.asz:
            p.order.remove(0x67)
        else:
            raise AssertionError("cannot fit the instruction in 15 bytes")
        length -= 1


def operand_size(spec: Spec, p: Prefixes) -> int:
    w = bool(p.rex & 8)
    if spec.width == "b":
        return 1
    if spec.width in ("y", "dq"):  # 32/64 by REX.W (VEX.W) alone; "dq": a memory operand twice as wide
        return 8 if w else 4
    if spec.width == "s":
        return 2 if p.osz and not w else 8
    return 8 if w else 2 if p.osz else 4


def memory_size(spec: Spec, opsize: int) -> int:
    return 2 * opsize if spec.width == "dq" else spec.mem_size or opsize


def form_name(spec: Spec, opsize: int, msize: int) -> str:
    acc = {1: "al", 2: "ax", 4: "eax", 8: "rax"}[opsize]
    suffix = {1: "b", 2: "w", 4: "d", 8: "q"}[opsize]
    imm = 16 if opsize == 2 else 32
    return spec.name.format(w=8 * opsize, m=8 * msize, i=imm, a=acc, s=suffix, n=msize)


# --------------------------------------------------------------------------------------------------
# Address solving
# --------------------------------------------------------------------------------------------------


@dataclass
class Shape:
    """A ModRM memory operand as the CPU decodes it."""

    base: int  # GPR, NO_REG or RIP
    index: int  # GPR or NO_REG
    scale: int
    disp: int  # drawn value (the solver may replace it when `free_disp`)
    free_disp: bool  # a disp32 the solver may choose
    addr_bits: int


def decode_shape(mod: int, rm: int, sib: int | None, rex: int, disp: int, addr_bits: int) -> Shape:
    b = 8 if rex & 1 else 0
    x = 8 if rex & 2 else 0
    if rm == 4:
        assert sib is not None
        index = (sib >> 3 & 7) | x
        scale = 1 << (sib >> 6)
        if index == 4:
            index, scale = NO_REG, 1
        if sib & 7 == 5 and mod == 0:
            return Shape(NO_REG, index, scale, disp, True, addr_bits)
        return Shape((sib & 7) | b, index, scale, disp, mod == 2, addr_bits)
    if rm == 5 and mod == 0:
        return Shape(RIP, NO_REG, 1, disp, True, addr_bits)
    return Shape(rm | b, NO_REG, 1, disp, mod == 2, addr_bits)


def effective_address(shape: Shape, regs: dict[int, int], next_rip: int) -> int:
    ea = shape.disp
    if shape.base == RIP:
        ea += next_rip
    elif shape.base >= 0:
        ea += regs[shape.base]
    if shape.index >= 0:
        ea += regs[shape.index] * shape.scale
    return ea & ((1 << shape.addr_bits) - 1)


def _fits_disp32(d: int) -> bool:
    return -(1 << 31) <= d < (1 << 31)


def solve(
    rng: Rng, shape: Shape, target: int, known: dict[int, int], gprs: list[int], next_rip: int
) -> dict[int, int] | None:
    """Register values (and shape.disp) making the effective address equal `target` (mod address size).

    `known` holds registers whose value is already fixed (stack pointer, bit offset); the others are free.
    Distinct base and index: the index keeps its drawn value and the base is solved. base == index: the
    register is solved with the combined coefficient (an inverse modulo 2^n for odd coefficients).
    Returns the values of every address register, or None when this target has no solution.
    """
    bits = shape.addr_bits
    mask = (1 << bits) - 1
    values: dict[int, int] = {}
    coef: dict[int, int] = {}
    fixed = next_rip if shape.base == RIP else 0

    def term(reg: int, c: int) -> None:
        nonlocal fixed
        if reg in known:
            values[reg] = known[reg]
            fixed += known[reg] * c
        else:
            coef[reg] = coef.get(reg, 0) + c

    if shape.base >= 0:
        term(shape.base, 1)
    if shape.index >= 0:
        term(shape.index, shape.scale)
    if len(coef) == 2:
        values[shape.index] = gprs[shape.index]
        fixed += gprs[shape.index] * coef.pop(shape.index)
    if not coef:
        if shape.free_disp:
            d = _sext((target - fixed) & mask, bits)
            if bits == 64 and not _fits_disp32(d):
                return None
            shape.disp = _sext(d, 32)
        elif (fixed + shape.disp - target) & mask:
            return None
        return values
    ((reg, c),) = coef.items()
    x = (target - fixed - shape.disp) & mask
    e = (c & -c).bit_length() - 1  # 2-adic valuation
    low = x & ((1 << e) - 1)
    if low:
        if not shape.free_disp:
            return None
        adj = low if _fits_disp32(shape.disp + low) else low - (1 << e)
        shape.disp += adj
        x = (target - fixed - shape.disp) & mask
    v = ((x >> e) * pow(c >> e, -1, 1 << (bits - e))) & ((1 << (bits - e)) - 1)
    if e:
        v |= rng.getrandbits(e) << (bits - e)
    if bits == 32:
        v |= rng.upper() << 32
    values[reg] = v
    return values


# --------------------------------------------------------------------------------------------------
# Placement
# --------------------------------------------------------------------------------------------------


def offset(draw: st.DrawFn, rng: Rng, size: int, region: int, *, locked: bool = False, span: int = 0) -> int:
    """An offset in a region of `region` bytes for an access of `size` (and `span` bytes in all).

    Mixes aligned, misaligned, page-crossing and edge placements; locked accesses stay in one line.
    """
    span = max(span, size)
    hi = region - span
    kind = draw(st.sampled_from(("aligned", "aligned", "any", "cross", "edge")))
    if kind == "aligned":
        off = rng.randint(0, hi // size) * size
    elif kind == "cross" and size > 1 and region > PAGE and not locked:
        off = PAGE - rng.randint(1, size - 1)
    elif kind == "edge":
        off = rng.choice((0, hi))
    else:
        off = rng.randint(0, hi)
    if locked and off % LINE + size > LINE:
        off -= off % size
    return off


def locked_ok(addr: int, size: int) -> bool:
    return addr % LINE + size <= LINE


@dataclass
class Built:
    """Work in progress of one case."""

    gprs: list[int]
    patches: list[tuple[int, bytes]] = field(default_factory=list)
    accesses: list[Access] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def first_mmio(accesses: list[Access]) -> int:
    """Address of the first access that touches the window (the fault the hardware reports)."""
    for a in accesses:
        if WINDOW <= a.addr < WINDOW + WINDOW_SIZE:
            return a.addr
    return WINDOW


# --------------------------------------------------------------------------------------------------
# ModRM forms
# --------------------------------------------------------------------------------------------------


def stack_pointer(draw: st.DrawFn, rng: Rng, spec: Spec, opsize: int, region: int, size: int) -> int:
    """RSP for a PUSH/POP whose stack slot may be misaligned or cross a page, away from the edges."""
    slot = min(max(offset(draw, rng, opsize, size), 0x100), size - 0x100)
    return region + slot + (opsize if spec.kind is Kind.PUSH else 0)


def _imm_bytes(rng: Rng, kind: str, opsize: int) -> bytes:
    if kind == "ib":
        return bytes([rng.sized(1)])
    if kind == "iz":
        n = 2 if opsize == 2 else 4
        return rng.sized(n).to_bytes(n, "little")
    return b""


@st.composite
def modrm_case(draw: st.DrawFn, spec: Spec, bad_lock: bool = False) -> Case:
    """A ModRM form; with `bad_lock`, an illegal LOCK (non-lockable form, or lockable in register form)."""
    stack = spec.kind in (Kind.PUSH, Kind.POP)
    rng = Rng(draw(st.integers(0, MASK64)))
    mod = draw(st.sampled_from((0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3)))
    if spec.mem_only and mod == 3:
        mod = 0
    if bad_lock and spec.lock:
        mod = 3
    reg_field = spec.group if spec.group is not None else draw(st.integers(0, 7))
    # SIB (rm 4) and the rBP/RIP/no-base encodings (rm 5, SIB base 5) more often than uniform draws.
    rm = draw(st.sampled_from((0, 1, 2, 3, 4, 4, 4, 5, 5, 6, 7)))
    sib = None
    if mod != 3 and rm == 4:
        scale, index = draw(st.integers(0, 3)), draw(st.integers(0, 7))
        sib = scale << 6 | index << 3 | draw(st.sampled_from((0, 1, 2, 3, 4, 4, 5, 5, 6, 7)))
    p = spec_prefixes(draw, rng, spec, lock_ok=spec.lock and mod != 3, lock=bad_lock)
    disp_len = (
        1
        if mod == 1
        else 4
        if mod == 2 or (mod == 0 and (rm == 5 or (sib is not None and sib & 7 == 5)))
        else 0
    )
    imm_opsize = operand_size(spec, p)
    imm_len = 1 if spec.imm == "ib" else (2 if imm_opsize == 2 else 4) if spec.imm == "iz" else 0
    length = len(p.encode()) + len(spec.opcode) + 1 + (sib is not None) + disp_len + imm_len
    trim(p, length)
    opsize = operand_size(spec, p)
    msize = memory_size(spec, opsize)
    room = msize  # bytes that must be mapped from the operand on
    locked = spec.locked or p.lock
    rex = p.rex
    rbit = 8 if rex & 4 else 0
    bits = 32 if p.asz else 64
    disp = rng.randint(-128, 127) if mod == 1 else rng.disp32() if disp_len else 0
    imm = _imm_bytes(rng, spec.imm, opsize)
    gprs = [rng.reg() for _ in range(16)]
    rflags = rng.rflags()
    fs_base, gs_base = rng.seg_base(), rng.seg_base()
    seed = rng.getrandbits(32)
    b = Built(gprs)

    def encode(shape: Shape | None) -> bytes:
        modrm = (mod << 6) | (reg_field << 3) | rm
        out = p.encode() + spec.opcode + bytes([modrm])
        if sib is not None:
            out += bytes([sib])
        if disp_len == 1:
            out += (shape.disp if shape else disp).to_bytes(1, "little", signed=True)
        elif disp_len == 4:
            out += (shape.disp if shape else disp).to_bytes(4, "little", signed=True)
        return out + imm

    length = len(encode(None))
    assert length <= 15
    next_rip = CODE + length

    if mod == 3:
        # Register form: no memory operand. Only the stack forms touch memory, and then in MMIO.
        if stack:
            rsp = stack_pointer(draw, rng, spec, opsize, WINDOW, WINDOW_SIZE)
            b.gprs[RSP] = rsp
            slot = rsp - opsize if spec.kind is Kind.PUSH else rsp
            b.accesses = [Access(slot, opsize, spec.kind is Kind.PUSH)]
            b.notes.append("register form, stack in MMIO")
        else:
            b.notes.append("register form (no memory operand)")
        rm_reg = rm | (8 if rex & 1 else 0)
        extra = shape_values(spec, rng, b, -1, b.gprs[rm_reg], msize, opsize, seed)
        undefined = count_undefined(spec, opsize, _count(spec, b, imm))
        return _finish(
            spec,
            p,
            encode(None),
            b,
            rflags,
            fs_base,
            gs_base,
            seed,
            opsize,
            msize,
            mod=3,
            undefined=undefined,
        ).with_tags(extra)

    shape = decode_shape(mod, rm, sib, rex, disp, bits)
    seg = p.seg
    known: dict[int, int] = {}
    sp_adjust = 0
    stack_region = RAM
    if stack:
        forced = shape.base == RSP and shape.index == NO_REG and not shape.free_disp
        in_window = forced or draw(st.sampled_from((False, False, True)))
        stack_region = WINDOW if in_window else RAM
        size = WINDOW_SIZE if in_window else RAM_SIZE
        rsp = stack_pointer(draw, rng, spec, opsize, stack_region, size)
        b.gprs[RSP] = rsp
        # POP computes its destination with the incremented stack pointer.
        sp_adjust = opsize if spec.kind is Kind.POP else 0
        if shape.base == RSP:
            known[RSP] = rsp + sp_adjust
        if forced:
            target = (rsp + sp_adjust + shape.disp) & ((1 << bits) - 1)
            fs_base, gs_base = (
                (0, gs_base) if seg == "fs" else (fs_base, 0) if seg == "gs" else (fs_base, gs_base)
            )
            operand_region = WINDOW
            b.notes.append("operand addressed by the stack pointer alone")
        else:
            operand_region = RAM if in_window and draw(st.sampled_from((False, False, True))) else WINDOW
            target = -1
        b.notes.append(f"stack in {'MMIO' if in_window else 'RAM'}")
    else:
        operand_region = WINDOW
        target = -1

    bit_reg = -1
    bit_disp = 0
    if spec.bit == "reg":
        bits_w = 8 * opsize
        kmax = (1 << (bits_w - 1)) // bits_w
        k_kind = draw(st.sampled_from(("near", "near", "far", "extreme")))
        if k_kind == "near":
            k = rng.randint(-64, 64)
        elif k_kind == "far":
            k = rng.randint(-kmax, kmax - 1)
        else:
            k = rng.choice((-kmax, kmax - 1))
        bit = rng.randrange(bits_w)
        value = (k * bits_w + bit) & ((1 << bits_w) - 1)
        if bits_w < 64:
            value |= rng.getrandbits(64 - bits_w) << bits_w
        bit_reg = reg_field | rbit
        known[bit_reg] = value
        bit_disp = k * opsize
        b.notes.append(f"bit offset {k * bits_w + bit} (element {k:+d})")

    region_size = WINDOW_SIZE if operand_region == WINDOW else RAM_SIZE
    if target < 0:
        target = operand_region + offset(draw, rng, room, region_size, locked=locked)
    # CMPXCHG16B: a 16-byte aligned operand, or now and then a misaligned one (#GP(0), no access).
    misaligned = msize == 16 and rng.random() < 0.15
    if msize == 16:
        target -= target % 16
        target += 8 if misaligned and target + 24 <= operand_region + region_size else -8 if misaligned else 0
    seg_base = fs_base if seg == "fs" else gs_base if seg == "gs" else 0

    values: dict[int, int] | None = None
    for attempt in range(16):
        delta = (attempt + 1) // 2 * (1 if attempt % 2 else -1)
        t = target + delta
        if not (
            operand_region <= t
            and t + room <= operand_region + region_size
            and (not locked or locked_ok(t, msize))
            and (msize != 16 or (t % 16 != 0) == misaligned)
        ):
            continue
        for base_try in (seg_base, 0):
            off_t = (t - base_try) & MASK64
            if bits == 32 and off_t >> 32:
                continue
            ea = (off_t - bit_disp) & ((1 << bits) - 1)
            trial = Shape(shape.base, shape.index, shape.scale, shape.disp, shape.free_disp, bits)
            values = solve(rng, trial, ea, known, b.gprs, next_rip)
            if values is None and bit_reg >= 0 and bit_reg in (shape.base, shape.index):
                # The bit-offset register is also an address register and nothing else is free:
                # move the offset to a register the address does not use.
                free = [r | rbit for r in range(8) if r | rbit not in (shape.base, shape.index)]
                new_reg = rng.choice(free)
                known[new_reg] = known.pop(bit_reg)
                bit_reg = new_reg
                reg_field = new_reg & 7
                trial = Shape(shape.base, shape.index, shape.scale, shape.disp, shape.free_disp, bits)
                values = solve(rng, trial, ea, known, b.gprs, next_rip)
            if values is not None:
                shape = trial
                target = t
                seg_base = base_try
                break
        if values is not None:
            break
    assume(values is not None)
    assert values is not None
    if seg == "fs":
        fs_base = seg_base
    elif seg == "gs":
        gs_base = seg_base
    for reg, v in values.items():
        if not (stack and reg == RSP):
            b.gprs[reg] = v & MASK64
    for reg, v in known.items():
        if reg != RSP or not stack:
            b.gprs[reg] = v & MASK64
    # Self-check: the address the CPU computes is the target.
    regs_for_ea = dict(enumerate(b.gprs))
    if stack and shape.base == RSP:
        regs_for_ea[RSP] = b.gprs[RSP] + sp_adjust
    ea = (effective_address(shape, regs_for_ea, next_rip) + bit_disp) & ((1 << bits) - 1)
    assert (seg_base + ea) & MASK64 == target, (hex(seg_base), hex(ea), hex(target))

    if rng.random() < 0.5:
        b.patches.append((target, rng.sized(msize).to_bytes(msize, "little")))
    if stack:
        rsp = b.gprs[RSP]
        if spec.kind is Kind.PUSH:
            b.accesses = [Access(target, msize, False), Access(rsp - opsize, opsize, True)]
        else:
            b.accesses = [Access(rsp, opsize, False), Access(target, msize, True)]
    elif spec.kind is Kind.LOAD:
        b.accesses = [Access(target, msize, False)]
    elif spec.kind is Kind.STORE:
        b.accesses = [Access(target, msize, True)]
    else:
        b.accesses = [Access(target, msize, False), Access(target, msize, True)]
    extra = shape_values(spec, rng, b, target, 0, msize, opsize, seed)
    undefined = count_undefined(spec, opsize, _count(spec, b, imm))
    if misaligned:
        b.accesses = []
        b.notes.append("misaligned 16-byte operand: #GP(0)")
    if shape.base == RIP:
        extra |= {"rip-relative"}
    case = _finish(
        spec,
        p,
        encode(shape),
        b,
        rflags,
        fs_base,
        gs_base,
        seed,
        opsize,
        msize,
        bits,
        mod=mod,
        undefined=undefined,
    )
    return replace(case.with_tags(extra), expect="#GP") if misaligned else case.with_tags(extra)


def _expect_ud(case: Case) -> Case:
    """The case as an illegal-LOCK case: #UD before any access, state unchanged."""
    form = f"lock {case.form} (#UD)"
    return replace(case, form=form, family="lock_ud", accesses=(), strides=(), expect="#UD")


def tags_of(spec: Spec, p: Prefixes, mod: int | None) -> frozenset[str]:
    """Encoding traits: 'null-seg-last' (ES/CS/SS/DS after FS/GS), 'rex.r-group' (REX.R on a group
    opcode whose ModRM.reg is an opcode extension), 'test-alias' (F6/F7 /1), 'reg-form' (ModRM.mod 3),
    'lock' (a LOCK prefix), '66-rex.w' (66 and REX.W together). modrm_case adds 'rip-relative' and the
    tags of `shape_values`."""
    tags = set()
    if p.null_after_fs_gs:
        tags.add("null-seg-last")
    if spec.group is not None and p.rex & 4:
        tags.add("rex.r-group")
    if spec.group == 1 and spec.family == "test":
        tags.add("test-alias")
    if mod == 3:
        tags.add("reg-form")
    if p.lock:
        tags.add("lock")
    if p.osz and p.rex & 8:
        tags.add("66-rex.w")
    return frozenset(tags)


def _finish(
    spec: Spec,
    p: Prefixes,
    code: bytes,
    b: Built,
    rflags: int,
    fs_base: int,
    gs_base: int,
    seed: int,
    opsize: int,
    msize: int,
    addr_bits: int = 64,
    strides: tuple[int, ...] = (),
    rep: bool = False,
    mod: int | None = None,
    undefined: int | None = None,
) -> Case:
    return Case(
        form=form_name(spec, opsize, msize),
        family=spec.family,
        code=code,
        gprs=tuple(v & MASK64 for v in b.gprs),
        rflags=rflags,
        fs_base=fs_base,
        gs_base=gs_base,
        seed=seed,
        patches=tuple(b.patches),
        fault_gpa=first_mmio(b.accesses),
        accesses=tuple(b.accesses),
        strides=strides,
        rep=rep,
        addr_size=addr_bits // 8,
        undefined=spec.undefined if undefined is None else undefined,
        reason=spec.reason,
        note="; ".join(b.notes),
        tags=tags_of(spec, p, mod),
    )


# --------------------------------------------------------------------------------------------------
# moffs forms (A0-A3)
# --------------------------------------------------------------------------------------------------


@st.composite
def moffs_case(draw: st.DrawFn, spec: Spec, bad_lock: bool = False) -> Case:
    rng = Rng(draw(st.integers(0, MASK64)))
    p = prefixes(draw, rng, lock_ok=False, lock=bad_lock)
    trim(p, len(p.encode()) + 1 + (4 if p.asz else 8))
    opsize = operand_size(spec, p)
    bits = 32 if p.asz else 64
    gprs = [rng.reg() for _ in range(16)]
    rflags = rng.rflags()
    fs_base, gs_base = rng.seg_base(), rng.seg_base()
    seed = rng.getrandbits(32)
    target = WINDOW + offset(draw, rng, opsize, WINDOW_SIZE)
    seg = p.seg
    base = fs_base if seg == "fs" else gs_base if seg == "gs" else 0
    if bits == 32 and base > target:
        base = rng.randint(0, target)
        fs_base, gs_base = (base, gs_base) if seg == "fs" else (fs_base, base)
    moffs = (target - base) & ((1 << bits) - 1)
    code = p.encode() + spec.opcode + moffs.to_bytes(bits // 8, "little")
    b = Built(gprs)
    if rng.random() < 0.5:
        b.patches.append((target, rng.sized(opsize).to_bytes(opsize, "little")))
    b.accesses = [Access(target, opsize, spec.kind is Kind.MOFFS_STORE)]
    return _finish(spec, p, code, b, rflags, fs_base, gs_base, seed, opsize, opsize, bits)


# --------------------------------------------------------------------------------------------------
# String forms
# --------------------------------------------------------------------------------------------------


@st.composite
def string_case(draw: st.DrawFn, spec: Spec, bad_lock: bool = False) -> Case:
    rep = rep_prefix(spec)
    rng = Rng(draw(st.integers(0, MASK64)))
    p = prefixes(draw, rng, lock_ok=False, rep=rep, lock=bad_lock)
    trim(p, len(p.encode()) + 1)
    w = operand_size(spec, p)
    bits = 32 if p.asz else 64
    gprs = [rng.reg() for _ in range(16)]
    df = draw(st.booleans())
    rflags = (rng.rflags() & ~DF) | (DF if df else 0)
    fs_base, gs_base = rng.seg_base(), rng.seg_base()
    seed = rng.getrandbits(32)
    # Counts above vmmio's per-exit REP budget (64) make it return to the guest mid-instruction.
    count = (
        draw(st.one_of(st.sampled_from((0, 1, 2)), st.integers(0, 12), st.integers(60, 140))) if rep else 1
    )
    iters = max(count, 1)
    step = -w if df else w
    kind = spec.kind
    has_src = kind in (Kind.MOVS, Kind.LODS, Kind.CMPS)
    has_dst = kind in (Kind.MOVS, Kind.STOS, Kind.CMPS, Kind.SCAS)
    if has_src and has_dst:
        src_region, dst_region = draw(st.sampled_from(((WINDOW, RAM), (RAM, WINDOW), (WINDOW, WINDOW))))
    else:
        src_region = dst_region = WINDOW

    def start(region: int) -> int:
        size = WINDOW_SIZE if region == WINDOW else RAM_SIZE
        first = offset(draw, rng, w, size, span=iters * w)
        # `first` is the lowest element; with DF the walk starts at the highest one.
        return region + first + (iters - 1) * w if df else region + first

    b = Built(gprs)
    seg = p.seg
    notes = [f"count {count}" if rep else "no rep", "DF=1" if df else "DF=0"]
    src = dst = 0
    if has_src:
        src = start(src_region)
        low = src - (iters - 1) * w if df else src
        base = fs_base if seg == "fs" else gs_base if seg == "gs" else 0
        if bits == 32 and base > low:
            base = rng.randint(0, low)
            fs_base, gs_base = (base, gs_base) if seg == "fs" else (fs_base, base)
        rsi = (src - base) & MASK64
        if bits == 32:
            rsi |= rng.upper() << 32
        b.gprs[6] = rsi
    if has_dst:
        dst = start(dst_region)
        rdi = dst
        if bits == 32:
            rdi |= rng.upper() << 32
        b.gprs[7] = rdi
    if rep:
        b.gprs[1] = count | (rng.upper() << 32 if bits == 32 else 0)

    # Memory contents: edge values, and for CMPS/SCAS a pattern of equal and different elements so
    # that REPE/REPNE stop somewhere inside the count.
    mask = (1 << (8 * w)) - 1
    if kind in (Kind.CMPS, Kind.SCAS):
        pattern = draw(st.sampled_from(("equal", "differ", "switch", "random")))
        switch = draw(st.integers(0, iters))
        for k in range(iters):
            if pattern == "random":
                eq = rng.random() < 0.5
            else:
                eq = pattern == "equal" or (pattern == "switch" and k < switch)
            if kind is Kind.SCAS:
                a = b.gprs[0] & mask
                value = a if eq else a ^ rng.randint(1, mask)
                b.patches.append((dst + k * step, value.to_bytes(w, "little")))
            else:
                a = rng.sized(w)
                other = a if eq else a ^ rng.randint(1, mask)
                b.patches.append((src + k * step, a.to_bytes(w, "little")))
                b.patches.append((dst + k * step, other.to_bytes(w, "little")))
        notes.append(f"{pattern} pattern" + (f" switching at {switch}" if pattern == "switch" else ""))
    elif has_src and rng.random() < 0.5:
        b.patches.append((src, rng.sized(w).to_bytes(w, "little")))

    accesses: list[Access] = []
    strides: list[int] = []
    if has_src:
        accesses.append(Access(src, w, False))
        strides.append(step)
    if has_dst:
        accesses.append(Access(dst, w, kind in (Kind.MOVS, Kind.STOS)))
        strides.append(step)
    # The template is one iteration; with a zero count nothing is accessed (the fault GPA is moot).
    b.accesses = accesses
    b.notes = notes
    code = p.encode() + spec.opcode
    return _finish(spec, p, code, b, rflags, fs_base, gs_base, seed, w, w, bits, tuple(strides), bool(rep))


def case_for(spec: Spec, bad_lock: bool = False) -> st.SearchStrategy[Case]:
    if spec.kind in STRING_KINDS:
        strategy = string_case(spec, bad_lock)
    elif spec.kind in (Kind.MOFFS_LOAD, Kind.MOFFS_STORE):
        strategy = moffs_case(spec, bad_lock)
    else:
        strategy = modrm_case(spec, bad_lock)
    return strategy.map(_expect_ud) if bad_lock else strategy


def _bad_lock_case(spec: Spec) -> st.SearchStrategy[Case]:
    return case_for(spec, bad_lock=True)


@st.composite
def padded_case(draw: st.DrawFn) -> Case:
    """Any case padded with redundant null segment prefixes in front to exactly 15 bytes (still legal:
    a RIP-relative displacement is corrected for the longer instruction) or to 16-20 bytes (#GP)."""
    import iced_x86

    case = draw(st.sampled_from(SPECS).flatmap(case_for))
    length = draw(st.sampled_from((15, 15, 16, 16, 17, 20)))
    pad = max(length - len(case.code), 0) if length == 15 else length - len(case.code)
    filler = bytes(draw(st.sampled_from(tuple(NULL_SEGS.values()))) for _ in range(pad))
    code = filler + case.code
    if len(code) > 15:
        form = f"{case.form} ({len(code)} bytes, #GP)"
        return replace(case, code=code, form=form, family="too_long", accesses=(), strides=(), expect="#GP")
    decoder = iced_x86.Decoder(64, code, ip=CODE)
    insn = decoder.decode()
    if insn.is_ip_rel_memory_operand:
        at = decoder.get_constant_offsets(insn).displacement_offset
        disp = int.from_bytes(code[at : at + 4], "little", signed=True) - pad
        code = code[:at] + disp.to_bytes(4, "little", signed=True) + code[at + 4 :]
    return replace(case, code=code, form=f"{case.form} (15 bytes)", family="too_long")


def cases(family: str | None = None) -> st.SearchStrategy[Case]:
    """Cases of one family (or of every form), the form drawn uniformly. Family "lock_ud": any form
    with a LOCK prefix where it is illegal (a form that does not allow it, or its register form).
    Family "too_long": any form padded to the 15-byte limit, or beyond it (#GP)."""
    if family == "lock_ud":
        return st.sampled_from(SPECS).flatmap(_bad_lock_case)
    if family == "too_long":
        return padded_case()
    if family in CTL_FAMILIES:
        from oracles.gen_ctl import ctl_cases

        return ctl_cases(family)
    pool = SPECS if family is None else specs_of(family)
    return st.sampled_from(pool).flatmap(case_for)


__all__ = [
    "CODE",
    "CTL_FAMILIES",
    "FAMILIES",
    "FLAG_NAMES",
    "PAGE",
    "RAM",
    "RAM_SIZE",
    "SPECS",
    "STATUS",
    "WINDOW",
    "WINDOW_SIZE",
    "Access",
    "Case",
    "Kind",
    "Spec",
    "case_for",
    "cases",
    "first_mmio",
    "specs_of",
]
