"""Instruction bytes for fuzzing: structured generators biased towards what decodes, and what does not.

Each generator takes an RNG and a mode and returns bytes that start like an instruction of one family:
prefix storms, every legacy opcode map, 3DNow!, x87, VEX/EVEX/XOP with random payloads, rows of the
decoder's own opcode table (so most bytes reach deep decoding paths), the emulated forms, truncations
and plain random bytes. The bytes after the opcode are random, so ModRM/SIB/displacement/immediate
shapes vary; `instruction` adds random trailing bytes, or cuts them off.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from fuzz.core import Weighted
from vmmio.vmm.semantics import FORMS
from vmmio.x86 import tables
from vmmio.x86.decode import decode
from vmmio.x86.insn import Insn, OpMap

Gen = Callable[[random.Random, int], bytes]

LEGACY_PREFIXES = bytes.fromhex("66 67 f0 f2 f3 26 2e 36 3e 64 65")
REX = bytes(range(0x40, 0x50))
ESCAPES = {OpMap.ONE: b"", OpMap.M0F: b"\x0f", OpMap.M0F38: b"\x0f\x38", OpMap.M0F3A: b"\x0f\x3a"}
MANDATORY = {1: b"\x66", 2: b"\xf3", 3: b"\xf2"}
_MODRM_MOD = Weighted(((3, 0x00), (3, 0x40), (3, 0x80), (3, 0xC0)))  # mod field: memory forms and registers


def modrm(rng: random.Random) -> int:
    """A ModRM byte with each mod equally likely (rm=4 SIB and rm=5 disp32/RIP forms included)."""
    return _MODRM_MOD(rng) | rng.randrange(64)


def tail(rng: random.Random) -> bytes:
    """What follows an opcode: a ModRM, then random SIB/displacement/immediate bytes."""
    return bytes((modrm(rng),)) + rng.randbytes(rng.choice((0, 1, 2, 4, 5, 6, 8, 10)))


def prefixes(rng: random.Random, mode: int, most: int = 4) -> bytes:
    pool = LEGACY_PREFIXES + (REX if mode == 64 else b"")
    return bytes(rng.choice(pool) for _ in range(rng.randint(0, most)))


def prefix_storm(rng: random.Random, mode: int) -> bytes:
    """Any mix of 66/67/F0/F2/F3/segment/REX, up to and past the 15-byte limit, then an instruction."""
    n = rng.choice((1, 2, 3, 4, 7, 10, 12, 13, 14, 15, 16, 20))
    pool = LEGACY_PREFIXES + REX  # REX outside 64-bit mode is INC/DEC: still worth feeding
    return bytes(rng.choice(pool) for _ in range(n)) + rng.choice(_BODIES)(rng, mode)


def legacy_map(rng: random.Random, mode: int) -> bytes:
    """Any opcode of the one-byte, 0F, 0F38 or 0F3A map with a random tail."""
    esc = rng.choice(tuple(ESCAPES.values()))
    return prefixes(rng, mode, 2) + esc + bytes((rng.randrange(256),)) + tail(rng)


def table_row(rng: random.Random, mode: int) -> bytes:
    """A row of the decoder's opcode table with its mandatory prefix, ModRM.reg or exact ModRM."""
    row = rng.choice(_ROWS)
    pfx = MANDATORY.get(row.pfx or 0, b"")
    if row.modrm is not None:
        m = row.modrm
    else:
        m = modrm(rng)
        if row.reg is not None:
            m = (m & ~0x38) | (row.reg << 3)
    rest = rng.randbytes(rng.choice((0, 1, 2, 4, 6, 8, 10)))
    return prefixes(rng, mode, 2) + pfx + ESCAPES[row.opmap] + bytes((row.opcode, m)) + rest


def three_dnow(rng: random.Random, mode: int) -> bytes:
    """0F 0F ModRM [SIB/disp] imm8-suffix; the suffix decides the instruction."""
    m = modrm(rng)
    disp = rng.randbytes((0, 1, 4, 0)[m >> 6] + (1 if m & 7 == 4 and m < 0xC0 else 0))
    suffix = rng.choice(_3DNOW) if rng.random() < 0.7 else rng.randrange(256)
    return prefixes(rng, mode, 1) + b"\x0f\x0f" + bytes((m,)) + disp + bytes((suffix,))


def x87(rng: random.Random, mode: int) -> bytes:
    return prefixes(rng, mode, 1) + bytes((rng.randrange(0xD8, 0xE0),)) + tail(rng)


def _vector_opcode(rng: random.Random, table: dict[int, frozenset[int]], vmap: int) -> int:
    ops = _SORTED.get((id(table), vmap))
    return rng.choice(ops) if ops and rng.random() < 0.8 else rng.randrange(256)


def vex2(rng: random.Random, mode: int) -> bytes:
    """C5 RvvvvLpp: in 16/32-bit mode the payload's top bits must be 11 or it is LDS."""
    b1 = rng.randrange(256)
    if mode != 64 and rng.random() < 0.8:
        b1 |= 0xC0
    return _rare_prefix(rng) + bytes((0xC5, b1, _vector_opcode(rng, tables.VEX_OPCODES, 1))) + tail(rng)


def vex3(rng: random.Random, mode: int) -> bytes:
    vmap = rng.choice((1, 2, 3)) if rng.random() < 0.8 else rng.randrange(32)
    b1 = (rng.randrange(8) << 5) | vmap
    if mode != 64 and rng.random() < 0.8:
        b1 |= 0xC0
    op = _vector_opcode(rng, tables.VEX_OPCODES, vmap)
    return _rare_prefix(rng) + bytes((0xC4, b1, rng.randrange(256), op)) + tail(rng)


def evex(rng: random.Random, mode: int) -> bytes:
    """62 P0 P1 P2: mostly with the fixed bits right (P0.3 = 0, P1.2 = 1) and, outside 64-bit mode,
    P0's top bits 11 (else BOUND) and P2.V' set."""
    vmap = rng.choice((1, 2, 3, 5, 6)) if rng.random() < 0.8 else rng.randrange(8)
    p0 = (rng.randrange(16) << 4) | vmap
    p1 = rng.randrange(256)
    p2 = rng.randrange(256)
    if rng.random() < 0.85:
        p1 |= 0x04
        if mode != 64:
            p0 |= 0xC0
            p2 |= 0x08
    op = _vector_opcode(rng, tables.EVEX_OPCODES, vmap)
    return _rare_prefix(rng) + bytes((0x62, p0, p1, p2, op)) + tail(rng)


def xop(rng: random.Random, mode: int) -> bytes:
    """8F RXB.mmmmm W.vvvv.L.pp: maps 8-10; a map below 8 is POP r/m."""
    vmap = rng.choice((8, 9, 10)) if rng.random() < 0.85 else rng.randrange(32)
    b1 = (rng.randrange(8) << 5) | vmap
    op = _vector_opcode(rng, tables.XOP_OPCODES, vmap)
    return _rare_prefix(rng) + bytes((0x8F, b1, rng.randrange(256), op)) + tail(rng)


def _rare_prefix(rng: random.Random) -> bytes:
    """Usually nothing before VEX/EVEX/XOP; sometimes a segment/67 (allowed) or 66/F2/F3/F0/REX (#UD)."""
    return bytes((rng.choice(b"\x67\x2e\x65\x66\xf2\xf3\xf0\x40\x4c"),)) if rng.random() < 0.1 else b""


def emulated(rng: random.Random, mode: int) -> bytes:
    """An opcode vmmio emulates (moves, ALU, bits, stack, strings, port I/O) with prefixes and a tail."""
    opmap, op, reg = rng.choice(_FORMS)
    m = modrm(rng)
    if reg >= 0:
        m = (m & ~0x38) | (reg << 3)
    pfx = bytes(
        rng.choice(b"\x66\x67\xf3\xf2\xf0\x2e\x64\x65") for _ in range(rng.choice((0, 0, 0, 1, 1, 2)))
    )
    if mode == 64 and rng.random() < 0.4:
        pfx += bytes((rng.choice(REX),))
    return pfx + _escape(rng, opmap) + bytes((op, m)) + rng.randbytes(rng.choice((0, 1, 4, 5, 8)))


def _escape(rng: random.Random, where: int) -> bytes:
    """The bytes that select opcode space `where` (registry.space): a legacy escape, or a VEX/EVEX prefix
    with that map and random payload bits."""
    encoding, opmap = where >> 4, where & 15
    if encoding == 0:
        return ESCAPES[OpMap(opmap)]
    if encoding == 1:
        return bytes((0xC4, rng.randrange(8) << 5 | opmap, rng.randrange(256)))
    return bytes((0x62, rng.randrange(16) << 4 | opmap, rng.randrange(256) | 4, rng.randrange(256)))


def random_bytes(rng: random.Random, mode: int) -> bytes:
    return rng.randbytes(rng.randint(0, 20))


def truncated(rng: random.Random, mode: int) -> bytes:
    """A valid instruction cut short: every such prefix must decode as TRUNCATED."""
    for _ in range(4):
        code = rng.choice(_BODIES)(rng, mode) + bytes(16)
        try:
            insn = decode(code, mode)
        except Exception:
            return code[:2]
        if type(insn) is Insn and insn.length > 1:
            return code[: rng.randrange(1, insn.length)]
    return b""


_BODIES: tuple[Gen, ...] = (
    legacy_map,
    table_row,
    table_row,
    three_dnow,
    x87,
    vex2,
    vex3,
    evex,
    xop,
    emulated,
)
_ROWS = tuple(r for r in tables.ROWS if r.opmap in ESCAPES)
_3DNOW = tuple(sorted(tables.AMD_3DNOW))
_SORTED = {
    (id(t), vmap): tuple(sorted(ops))
    for t in (tables.VEX_OPCODES, tables.EVEX_OPCODES, tables.XOP_OPCODES)
    for vmap, ops in t.items()
}
_FORMS = tuple(sorted({key[:3] for key in FORMS}))  # (opcode space, opcode, reg)

GENERATORS: Weighted[Gen] = Weighted(
    (
        (10, prefix_storm),
        (14, legacy_map),
        (20, table_row),
        (4, three_dnow),
        (4, x87),
        (5, vex2),
        (6, vex3),
        (8, evex),
        (5, xop),
        (10, emulated),
        (6, truncated),
        (8, random_bytes),
    )
)


def instruction(rng: random.Random, mode: int) -> bytes:
    """Bytes from a random generator, then (mostly) random trailing bytes so the input runs on."""
    gen = GENERATORS(rng)
    code = gen(rng, mode)
    if gen is truncated:
        return code
    r = rng.random()
    if r < 0.6:
        code += rng.randbytes(rng.randint(1, 16))
    elif r < 0.7 and code:
        code = code[: rng.randrange(len(code))]
    return code
