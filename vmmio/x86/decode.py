"""x86 instruction decoder: bytes and a code size in, an `Insn` or a `DecodeError` out, never an exception.

The hot path is one function, written for CPython's cost model (each bytecode costs about the same, and
bitwise operators are not specialised, so a list index beats a mask): the state one or two prefixes
leave is read from tables (`_prefixes` reads longer runs), then lists indexed by operand-size key +
opcode give entries that already carry the operand size, width, mnemonic and immediate size for that
key (`_sized`), then one ModRM table look-up indexed by REX bits + byte says what kind of memory operand
follows and, for the common kinds, holds the finished operand. Displacements and immediates are read
with precompiled `struct` unpackers. VEX/EVEX/XOP, the rare flags and immediates leave the hot path
through helper functions."""

from __future__ import annotations

import struct
from functools import cache
from typing import Any

from vmmio.x86 import tables as T
from vmmio.x86.insn import MAX_INSN_LEN, DecodeError, DecodeStatus, Encoding, Insn, MemOperand, OpMap
from vmmio.x86.regs import NO_REG, RIP_REG, VEC_REG, Seg

__all__ = ["CACHE_LIMIT", "MAX_INSN_LEN", "decode", "decode_cached"]

CACHE_LIMIT = 8192  # per mode; sized so a full GC with every cache full stays under 10 ms

_TRUNCATED = DecodeStatus.TRUNCATED
_TOO_LONG = DecodeStatus.TOO_LONG
_BAD_LOCK = DecodeStatus.BAD_LOCK
_UNDEFINED = DecodeStatus.UNDEFINED
_LEGACY = Encoding.LEGACY
_M3DNOW = OpMap.M3DNOW
_SS = int(Seg.SS)
_DS = int(Seg.DS)
_FS = int(Seg.FS)

_S16 = struct.Struct("<h").unpack_from
_S32 = struct.Struct("<i").unpack_from
_S64 = struct.Struct("<q").unpack_from
_U16 = struct.Struct("<H").unpack_from
_U32 = struct.Struct("<I").unpack_from
_U64 = struct.Struct("<Q").unpack_from
_WB = struct.Struct("<hb").unpack_from
_FAR16 = struct.Struct("<hH").unpack_from
_FAR32 = struct.Struct("<iH").unpack_from
_BB = struct.Struct("<bb").unpack_from

_F_LOCK = T.F_LOCK
_F_3DNOW = T.F_3DNOW
_F_SIZED = T.F_SIZED
_F_ASIZED = T.F_ASIZED
_F_NOMOD = T.F_NOMOD
_F_A32 = T.F_A32
_F_NO66 = T.F_NO66

_S_MODRM = T.S_MODRM
_S_PLUSR = T.S_PLUSR
_S_NOMOD = T.S_NOMOD
_S_SPECIAL = T.S_SPECIAL

_I_B = T.I_B
_I_W = T.I_W
_I_Z = T.I_Z
_I_V = T.I_V
_I_MOFFS = T.I_MOFFS
_I_WB = T.I_WB
_I_FAR = T.I_FAR
_I_D = T.I_D
_I_BB = T.I_BB

_GK = T.GROUP_KEY

# Prefix kinds: 0 not a prefix, 1 = 66, 2 = 67, 3 = F0, 4 = F2/F3, 5 = REX, 16 + n = segment n, and in
# 64-bit mode 24 + n for ES/CS/SS/DS: those are null prefixes there, so they never displace FS/GS.
_P_OSZ, _P_ASZ, _P_LOCK, _P_REP, _P_REX, _P_SEG, _P_SEG_NULL = 1, 2, 3, 4, 5, 16, 24


def _prefix_table(mode: int) -> list[int]:
    t = [0] * 256
    t[0x66], t[0x67], t[0xF0], t[0xF2], t[0xF3] = _P_OSZ, _P_ASZ, _P_LOCK, _P_REP, _P_REP
    for b, s in zip((0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65), Seg, strict=True):
        t[b] = _P_SEG + s
    if mode == 64:
        for b in range(0x40, 0x50):
            t[b] = _P_REX
        for b, s in zip((0x26, 0x2E, 0x36, 0x3E), list(Seg)[:4], strict=True):
            t[b] = _P_SEG_NULL + s
    return t


# ---- opcode entries, sized ----
#
# A sized entry is a `tables` entry resolved for one operand-size key (66 + 2 * REX.W, or 2 * VEX.W):
# (shape, immediate kind, mnemonic, opmap, sub, rare, operand size, width, flags), where
# - the immediate kind is `tables`' with I_Z resolved to I_W or I_D by the operand size;
# - the mnemonic is a str, unless an address-size choice is left to `_rare`;
# - `sub` is None for a leaf; _UNDEF for an undefined opcode; for a dispatch entry a list of 4 * 72
#   items (None: undefined) indexed by mandatory-prefix index * 72 + GROUP_KEY[modrm], each the four
#   sized entries of a leaf; for a C4/C5/62/8F entry, see `_special_entry`;
# - `rare` is 0, or 1 for the flags `_rare` handles (2 is set on the way for a vector memory operand).
Sized = tuple[int, int, Any, OpMap, Any, int, int, int, int]
Sized4 = tuple[Sized, Sized, Sized, Sized]
_UNDEF: list[Any] = []
_UNDEF_ENTRY: Sized = (0, 0, "", OpMap.ONE, _UNDEF, 0, 0, 0, 0)
_SIZED_BY_ID: dict[int, Sized4] = {}  # shared leaves stay shared


def _sized(e: T.Entry) -> Sized4:
    """The four sized entries of a `tables` entry (see above)."""
    found = _SIZED_BY_ID.get(id(e))
    if found is not None:
        return found
    flags, immk, mnemonic, opmap, raw_sub, shape, rare, osizes, widths = e
    sub = None
    if raw_sub is not None:  # 288 items of a few distinct leaves: sized once each, looked up in bulk
        for key, leaf in dict(zip(map(id, raw_sub), raw_sub, strict=True)).items():
            if leaf is not None and key not in _SIZED_BY_ID:
                _sized(leaf)
        sub = list(map(_SIZED_BY_ID.get, map(id, raw_sub)))  # id(None) is never a key: None stays
    out = []
    for szk in range(4):
        opsize = osizes[szk]
        mn, r = mnemonic, int(rare != T.R_NONE)
        if flags & _F_SIZED and not flags & _F_3DNOW:
            mn, r = mnemonic[opsize >> 2], 0  # `_rare` would do only this for such a form
        k = (_I_W if opsize == 2 else _I_D) if immk == _I_Z else immk
        out.append((shape, k, mn, opmap, sub, r, opsize, widths[szk], flags))
    sized: Sized4 = (out[0], out[1], out[2], out[3])
    _SIZED_BY_ID[id(e)] = sized
    return sized


def _special_entry(e: T.Entry, op: int, mode: int) -> Sized:
    """C4/C5/62/8F: `sub` is (the four sized entries of the legacy form or None, and by the next byte
    whether the legacy form applies: 8F with a map select below 8 is POP r/m, not XOP; outside 64-bit
    mode C4/C5/62 with a ModRM.mod below 3 are LES/LDS/BOUND, not VEX/EVEX)."""
    legacy = e[4][0] if e[4] else None
    is_legacy = [(b & 0x1F < 8) if op == 0x8F else (mode != 64 and b < 0xC0) for b in range(256)]
    return (_S_SPECIAL, 0, "", OpMap.ONE, (None if legacy is None else _sized(legacy), is_legacy), 0, 0, 0, 0)


def _sized_map(entries: list[T.Entry | None], mode: int) -> list[Sized]:
    """A legacy map as one list indexed by operand-size key * 256 + opcode."""
    special = {op: _special_entry(e, op, mode) for op, e in enumerate(entries) if e and e[5] == _S_SPECIAL}
    out = []
    for szk in range(4):
        for op, e in enumerate(entries):
            if e is None:
                out.append(_UNDEF_ENTRY)
            elif op in special:
                out.append(special[op])  # the same for every size key
            else:
                out.append(_sized(e)[szk])
    return out


@cache
def _vector_map(mode: int, encoding: int, vmap: int) -> list[Sized4 | None] | None:
    """A VEX/EVEX/XOP map: by opcode, its four sized entries or None; None for an undefined map.
    Sized on first use: most programs never meet most maps. Vector entries carry no rare flags, so the
    decoder is free to use `rare` = 2 for "the memory operand needs `_vector_mem`"."""
    table = T.VECTOR[mode][encoding].get(vmap)
    if table is None:
        return None
    assert all(e is None or e[6] == T.R_NONE for e in table)
    return [None if e is None else _sized(e) for e in table]


# ---- ModRM and SIB ----
#
# Tables indexed by (REX & 7) << 8 | byte ("rx + byte" below).
_REG = [(m >> 3 & 7) | (x & 4) << 1 for x in range(8) for m in range(256)]  # ModRM.reg + REX.R
_RM = [(m & 7) | (x & 1) << 3 for x in range(8) for m in range(256)]  # ModRM.rm + REX.B (register form)
_REX_ROW = [(b & 7) << 8 for b in range(256)]
_REX_W2 = [(b >> 2) & 2 for b in range(256)]
_SEG_FOR_BASE = [_DS] * 17
_SEG_FOR_BASE[4] = _SEG_FOR_BASE[5] = _SS  # rSP/rBP-based forms use SS (R12/R13 do not)

# A SIB entry: (base, index, scale, default segment, displacement size forced by "no base" or 0, and
# the finished operand of a form without displacement when no segment override applies, or None).
_Sib = tuple[int, int, int, int, int, "MemOperand | None"]


def _sib_table(mod: int, addr_size: int, rows: int) -> list[_Sib]:
    out: list[_Sib] = []
    for x in range(rows):
        for sib in range(256):
            base = sib & 7
            index = (sib >> 3 & 7) | (x & 2) << 2
            scale = 1 << (sib >> 6)
            if index == 4:  # no index (only without REX.X)
                index, scale = NO_REG, 1
            if base == 5 and mod == 0:
                out.append((NO_REG, index, scale, _DS, 4, None))
            else:
                base |= (x & 1) << 3
                dseg = _SEG_FOR_BASE[base]
                pre = MemOperand(dseg, base, index, scale, 0, addr_size) if mod == 0 else None
                out.append((base, index, scale, dseg, 0, pre))
    return out


_SIB_MOD12 = _sib_table(1, 0, 8)

# A ModRM entry: (kind, reg, rm, pre, general) with `rm` -1 for memory forms, and by kind:
_K_REG = 0  # a register form (mod == 3): no memory operand;
_K_FIXED = 1  # no SIB, no displacement: `pre` is the finished operand;
_K_DISP8 = 2  # no SIB, disp8: `pre` lists the 256 operands by displacement byte, filled as they are met;
_K_GENERAL = 3  # anything else, and every memory form under a segment override: built from `general`,
# which is (SIB table or None, base, index, scale, displacement size, default segment) for every kind.
_General = tuple["list[_Sib] | None", int, int, int, int, int]
_ModRM = tuple[int, int, int, Any, _General]

# 16-bit addressing by ModRM.rm: base, index, default segment (BP-based forms use SS).
_RM16 = (
    (3, 6, _DS),
    (3, 7, _DS),
    (5, 6, _SS),
    (5, 7, _SS),
    (6, NO_REG, _DS),
    (7, NO_REG, _DS),
    (5, NO_REG, _SS),
    (3, NO_REG, _DS),
)


@cache
def _modrm_tables(addr_size: int, rip_base: int, rows: int) -> tuple[list[_ModRM], list[_ModRM]]:
    """The ModRM entries of one address size, and the same under a segment override, where every
    memory form is general (the prebuilt operands carry the default segment). `rows` is 8 in 64-bit
    mode and 1 elsewhere: without REX (VEX.RXB is ignored there too) the row is always 0."""
    out: list[_ModRM] = []
    ovr: list[_ModRM] = []
    sib0 = _sib_table(0, addr_size, rows)
    disp8: dict[tuple[int, int], list[MemOperand | None]] = {}  # one list per base/index, shared by rows
    no_mem = (None, NO_REG, NO_REG, 1, 0, _DS)
    for x in range(rows):
        for m in range(256):
            mod, rm = m >> 6, m & 7
            reg = _REG[x << 8 | m]
            sibt = None
            if mod == 3:
                out.append((_K_REG, reg, _RM[x << 8 | m], None, no_mem))
                ovr.append(out[-1])
                continue
            if addr_size == 2:
                base, index, dseg = _RM16[rm]
                dsz = (0, 1, 2)[mod]
                if mod == 0 and rm == 6:
                    base, dsz, dseg = NO_REG, 2, _DS  # [disp16]
            elif rm == 4:
                sibt = sib0 if mod == 0 else _SIB_MOD12
                base, index, dsz, dseg = NO_REG, NO_REG, (0, 1, 4)[mod], _DS
            elif rm == 5 and mod == 0:
                base, index, dsz, dseg = rip_base, NO_REG, 4, _DS
            else:
                base, index, dsz = rm | (x & 1) << 3, NO_REG, (0, 1, 4)[mod]
                dseg = _SEG_FOR_BASE[base]
            general = (sibt, base, index, 1, dsz, dseg)
            ovr.append((_K_GENERAL, reg, -1, None, general))
            if sibt is not None or dsz > 1:
                out.append(ovr[-1])
            elif dsz == 0:
                out.append((_K_FIXED, reg, -1, MemOperand(dseg, base, index, 1, 0, addr_size), general))
            else:
                out.append((_K_DISP8, reg, -1, disp8.setdefault((base, index), [None] * 256), general))
    return out, ovr


# Per mode: (prefix table, ModRM table, address size, one-byte map, 0F map, and for the rarer prefixes
# and maps: (ModRM table with 67, address size with 67, ModRM tables under a segment override without
# and with 67, 0F 38 map, 0F 3A map)).
_Rest = tuple[list[_ModRM], int, list[_ModRM], list[_ModRM], list[Sized], list[Sized]]
_Base = tuple[list[int], list[_ModRM], int, list[Sized], list[Sized], _Rest]
_BASE: dict[int, _Base] = {}
for _m, _a, _a67 in ((16, 2, 4), (32, 4, 2), (64, 8, 4)):
    _t = T.LEGACY[_m]
    _rip, _rows = (RIP_REG, 8) if _m == 64 else (NO_REG, 1)
    _plain, _ovr = _modrm_tables(_a, _rip, _rows)
    _plain67, _ovr67 = _modrm_tables(_a67, _rip, _rows)
    _BASE[_m] = (
        _prefix_table(_m),
        _plain,
        _a,
        _sized_map(_t[OpMap.ONE], _m),
        _sized_map(_t[OpMap.M0F], _m),
        (
            _plain67,
            _a67,
            _ovr,
            _ovr67,
            _sized_map(_t[OpMap.M0F38], _m),
            _sized_map(_t[OpMap.M0F3A], _m),
        ),
    )

# What the prefixes before the opcode leave: (REX, 66 seen, LOCK, the last F2/F3, the last segment
# prefix as recorded in `seg_override`, the override that applies to the memory operand (64-bit mode
# ignores ES/CS/SS/DS), ModRM/SIB table row ((REX & 7) << 8), operand-size key (66 + 2 * REX.W), its
# row of the sized maps, mandatory-prefix row of a dispatch list, ModRM table, address size).
_PState = tuple[int, int, bool, int, int, int, int, int, int, int, list[_ModRM], int]


def _prefixes(code: bytes, mode: int) -> tuple[int, _PState] | DecodeError:
    """Read the prefixes at the start of `code`: the index just after the opcode byte, and the state.

    The decoder runs this only for three or more prefixes; for one or two it reads the same states from
    tables this function filled at import.
    """
    ptab, mtab, addr_size, _, _, (mtab67, asz67, mtab_seg, mtab67_seg, _, _) = _BASE[mode]
    i = rex = osz = rep = 0
    lock = a67 = False
    seg = mseg = -1
    b = code[0]
    k = ptab[b]
    while k:
        if k == _P_REX:
            rex = b
        else:
            rex = 0  # a REX prefix counts only directly before the opcode
            if k >= _P_SEG_NULL:
                if seg < _FS:
                    seg = k - _P_SEG_NULL
            elif k >= _P_SEG:
                seg = mseg = k - _P_SEG
            elif k == _P_OSZ:
                osz = 1
            elif k == _P_ASZ:
                a67 = True
            elif k == _P_LOCK:
                lock = True
            else:
                rep = b
        i += 1
        if i == MAX_INSN_LEN:
            return _err(_TOO_LONG, MAX_INSN_LEN, "more than 15 bytes of prefixes")
        b = code[i]
        k = ptab[b]
    if a67:
        addr_size = asz67
        mtab = mtab67_seg if mseg >= 0 else mtab67
    elif mseg >= 0:
        mtab = mtab_seg
    szk = (rex >> 2 & 2) + osz
    pidx = 216 if rep == 0xF2 else 144 if rep == 0xF3 else 72 * osz
    return i + 1, (rex, osz, lock, rep, seg, mseg, (rex & 7) << 8, szk, szk << 8, pidx, mtab, addr_size)


_Ones = list[Any]  # by prefix byte: its _PState (None for other bytes)
_Twos = list[Any]  # by first prefix byte: a list by second byte of _PState (None for other bytes)


def _prefix_states(mode: int) -> tuple[_Ones, _Twos]:
    """The states after one prefix byte, and after two (by first, then second byte)."""
    ptab = _BASE[mode][0]
    pfx = [b for b in range(256) if ptab[b]]

    def state(code: bytes) -> _PState:
        r = _prefixes(code + b"\x90", mode)
        assert not isinstance(r, DecodeError)
        return r[1]

    one: _Ones = [state(bytes([b])) if b in pfx else None for b in range(256)]
    two: _Twos = [None] * 256
    for b in pfx:
        two[b] = [state(bytes([b, c])) if c in pfx else None for c in range(256)]
    return one, two


_MODES: dict[int, tuple[list[int], list[_ModRM], int, list[Sized], list[Sized], _Rest, _Ones, _Twos]] = {
    m: (*base, *_prefix_states(m)) for m, base in _BASE.items()
}


# Records are built through mutable twins of the frozen classes and then re-labelled: a frozen
# dataclass __init__ goes through object.__setattr__ per field (about 4 us for Insn), the twin stores
# slots directly. The twins add no slots, so the layouts are identical and __class__ may be assigned.
_TWIN = {"__slots__": (), "__setattr__": object.__setattr__, "__delattr__": object.__delattr__}
_InsnBuilder: Any = type("_InsnBuilder", (Insn,), {**_TWIN, "__init__": object.__init__})
_MemBuilder: Any = type("_MemBuilder", (MemOperand,), {**_TWIN, "__init__": object.__init__})


def _operand(seg: int, base: int, index: int, scale: int, disp: int, addr_size: int) -> MemOperand:
    """A memory operand built through the twin (the hot path in `decode` does the same inline)."""
    mem = _MemBuilder()
    mem.seg = seg
    mem.base = base
    mem.index = index
    mem.scale = scale
    mem.disp = disp
    mem.addr_size = addr_size
    mem.__class__ = MemOperand
    return mem  # type: ignore[no-any-return]


def _err(status: DecodeStatus, length: int, detail: str) -> DecodeError:
    if length > MAX_INSN_LEN and status != _TRUNCATED:
        # The CPU gives up with #GP as soon as decoding crosses byte 15, before it can see more.
        return DecodeError(_TOO_LONG, MAX_INSN_LEN, "instruction longer than 15 bytes")
    return DecodeError(status, length, detail)


def decode(code: bytes, mode: int) -> Insn | DecodeError:
    """Decode the instruction at the start of `code` for a 16, 32 or 64-bit code segment."""
    try:
        ptab, mtab, addr_size, t1, t0f, rest, one, two = _MODES[mode]
    except KeyError:
        raise ValueError(f"mode must be 16, 32 or 64, not {mode!r}") from None
    try:
        b = code[0]
        if ptab[b]:
            b1 = code[1]
            if not ptab[b1]:
                state = one[b]
                i = 2
                b = b1
            else:
                b2 = code[2]
                if not ptab[b2]:
                    state = two[b][b1]
                    i = 3
                    b = b2
                else:
                    r0 = _prefixes(code, mode)
                    if r0.__class__ is DecodeError:
                        return r0
                    i, state = r0  # type: ignore[misc]
                    b = code[i - 1]
            rex, osz, lock, rep, seg, mseg, rx, szk, so, pidx, mtab, addr_size = state
        else:
            i = 1
            rex = osz = rep = rx = szk = so = pidx = 0
            lock = False
            seg = mseg = -1
        op = b
        if op == 0x0F:
            op = code[i]
            i += 1
            if op == 0x38:
                op = code[i]
                i += 1
                e = rest[4][so + op]  # the 0F 38 map
            elif op == 0x3A:
                op = code[i]
                i += 1
                e = rest[5][so + op]  # the 0F 3A map
            else:
                e = t0f[so + op]
        else:
            e = t1[so + op]
        shape, immk, mnemonic, opmap, sub, rare, opsize, width, flags = e
        encoding = _LEGACY
        vex_l = 0
        if sub is not None:
            if shape == _S_SPECIAL:
                if i >= MAX_INSN_LEN:
                    # Every form needs the byte after the opcode (VEX payload or ModRM): that is byte 16.
                    return _err(_TOO_LONG, MAX_INSN_LEN, "instruction longer than 15 bytes")
                legacy, is_legacy = sub
                if is_legacy[code[i]]:  # LES/LDS/BOUND outside 64-bit mode, POP r/m (8F)
                    if legacy is None:
                        return _err(_UNDEFINED, i, "undefined opcode")
                    shape, immk, mnemonic, opmap, sub, rare, opsize, width, flags = legacy[szk]
                else:
                    r = _special(code, i, mode, rex, osz, rep, lock)
                    if r.__class__ is DecodeError:
                        return r
                    i, op, e, rx, encoding, vex_l, vec = r  # type: ignore[misc]
                    shape, immk, mnemonic, opmap, sub, rare, opsize, width, flags = e
                    if vec is not None:
                        rare = 2
            elif sub is _UNDEF:
                return _err(_UNDEFINED, i, "undefined opcode")
            if sub is not None:
                e4 = sub[pidx + _GK[code[i]]] if shape else sub[pidx]
                if e4 is None:
                    return _err(_UNDEFINED, i + (shape > 0), "undefined opcode/ModRM/prefix form")
                shape, immk, mnemonic, opmap, sub, rare, opsize, width, flags = e4[szk]
        if shape == _S_MODRM:
            modrm = code[i]
            i += 1
            kind, reg, rm, pre, general = mtab[rx + modrm]
            if kind == _K_DISP8:
                disp = code[i]
                i += 1
                mem = pre[disp]
                if mem is None:
                    _, base, index, _, _, dseg = general
                    mem = pre[disp] = _operand(
                        dseg, base, index, 1, disp - 256 if disp > 127 else disp, addr_size
                    )
            elif kind == _K_FIXED:
                mem = pre
            elif kind == _K_REG:
                mem = None
            else:
                sibt, base, index, scale, dsz, dseg = general
                if sibt is not None:
                    base, index, scale, dseg, nobase, pre = sibt[rx + code[i]]
                    i += 1
                    if nobase:
                        dsz = nobase
                if pre is None or mseg >= 0:
                    if dsz == 1:
                        disp = code[i]
                        if disp > 127:
                            disp -= 256
                        i += 1
                    elif dsz == 4:
                        disp = _S32(code, i)[0]
                        i += 4
                    elif dsz:
                        disp = _S16(code, i)[0]
                        i += 2
                    else:
                        disp = 0
                    mem = _MemBuilder()
                    mem.seg = mseg if mseg >= 0 else dseg
                    mem.base = base
                    mem.index = index
                    mem.scale = scale
                    mem.disp = disp
                    mem.addr_size = addr_size
                    mem.__class__ = MemOperand
                else:
                    mem = pre
        elif shape == _S_PLUSR:
            modrm = -1
            reg = _RM[rx + op]
            rm = -1
            mem = None
        elif shape == _S_NOMOD:
            modrm = code[i]
            i += 1
            reg = _REG[rx + modrm]
            rm = _RM[rx + modrm]
            mem = None
        else:
            modrm = -1
            reg = -1
            rm = -1
            mem = None
        if immk:
            if immk == _I_B:
                imm = code[i]
                if imm > 127:
                    imm -= 256
                imm_size = 1
            elif immk == _I_D:
                imm = _S32(code, i)[0]
                imm_size = 4
            elif immk == _I_W:
                imm = _S16(code, i)[0]
                imm_size = 2
            elif immk == _I_MOFFS:
                mem = _moffs(code, i, addr_size, mseg)
                i += addr_size
                imm = imm_size = 0
            else:
                imm, imm_size, extra = _rare_imm(code, i, immk, opsize)
                i += extra
            i += imm_size
        else:
            imm = imm_size = 0
        if rare:
            if rare == 2:
                mem = _vector_mem(code, vec, modrm, mem)  # type: ignore[arg-type]  # set with rare = 2
                if mem.__class__ is DecodeError:
                    return mem
            else:
                r2 = _rare(code, i, flags, mnemonic, opmap, op, reg, opsize, addr_size, osz, rx)
                if r2.__class__ is DecodeError:
                    return r2
                i, mnemonic, opmap, op = r2  # type: ignore[misc]
        if i > MAX_INSN_LEN:
            return _err(_TOO_LONG, MAX_INSN_LEN, "instruction longer than 15 bytes")
        if lock and (mem is None or not flags & _F_LOCK):
            return _err(_BAD_LOCK, i, "LOCK prefix on a form that does not allow it")
    except (IndexError, struct.error):
        if len(code) >= MAX_INSN_LEN:
            return _err(_TOO_LONG, MAX_INSN_LEN, "instruction longer than 15 bytes")
        return _err(_TRUNCATED, len(code), "instruction continues past the end of the bytes")
    insn = _InsnBuilder()
    insn.length = i
    insn.mode = mode
    insn.encoding = encoding
    insn.opmap = opmap
    insn.opcode = op
    insn.mnemonic = mnemonic
    insn.opsize = opsize
    insn.width = width
    insn.addr_size = addr_size
    insn.modrm = modrm
    insn.reg = reg
    insn.rm = rm
    insn.mem = mem
    insn.imm = imm
    insn.imm_size = imm_size
    insn.rex = rex
    insn.rep = rep
    insn.lock = lock
    insn.opsize_prefix = osz > 0
    insn.seg_override = seg
    insn.vex_l = vex_l
    insn.raw = code[:i]
    insn.__class__ = Insn
    return insn  # type: ignore[no-any-return]


def _moffs(code: bytes, i: int, addr_size: int, seg: int) -> MemOperand:
    """A0-A3: the operand is an absolute offset as wide as the address size."""
    if addr_size == 8:
        disp = _U64(code, i)[0]
    elif addr_size == 4:
        disp = _U32(code, i)[0]
    else:
        disp = _U16(code, i)[0]
    return _operand(seg if seg >= 0 else _DS, NO_REG, NO_REG, 1, disp, addr_size)


def _rare_imm(code: bytes, i: int, immk: int, opsize: int) -> tuple[int, int, int]:
    """Immediates outside the hot path: returns (value, size of the first immediate, extra bytes)."""
    if immk == _I_V:
        if opsize == 8:
            return _S64(code, i)[0], 8, 0
        if opsize == 4:
            return _S32(code, i)[0], 4, 0
        return _S16(code, i)[0], 2, 0
    if immk == _I_WB:  # ENTER: imm16, imm8
        return _WB(code, i)[0], 2, 1
    if immk == _I_FAR:  # offset (imm16/imm32 by operand size), then a 16-bit selector
        if opsize == 2:
            return _FAR16(code, i)[0], 2, 2
        return _FAR32(code, i)[0], 4, 2
    if immk == _I_BB:  # EXTRQ/INSERTQ: imm8, imm8
        return _BB(code, i)[0], 1, 1
    raise AssertionError(immk)


def _rare(
    code: bytes,
    i: int,
    flags: int,
    mnemonic: Any,
    opmap: OpMap,
    op: int,
    reg: int,
    opsize: int,
    addr_size: int,
    osz: int,
    rx: int,
) -> DecodeError | tuple[int, str, OpMap, int]:
    """Forms flagged `rare` in the table: returns (length so far, mnemonic, opmap, opcode) or an error."""
    if flags & _F_3DNOW:
        op = code[i]
        i += 1
        name = T.AMD_3DNOW.get(op)
        if name is None:
            return _err(_UNDEFINED, i, "undefined 3DNow! opcode")
        return i, name, _M3DNOW, op
    if flags & _F_ASIZED:
        mnemonic = mnemonic[addr_size >> 2]
    elif flags & _F_NOMOD:
        if rx & 0x400 and (op & 1 or reg != 8):
            return _err(_UNDEFINED, i, "no such control/debug register")
    elif flags & _F_A32:
        if addr_size != 4:
            return _err(_UNDEFINED, i, "needs 32-bit addressing")
    elif flags & _F_NO66:
        if osz:
            return _err(_UNDEFINED, i, "66 prefix not allowed")
    elif reg == 8:
        mnemonic = "xchg"  # 90 with REX.B is xchg r8, rax, not nop
    return i, mnemonic, opmap, op


# What `_vector_mem` needs: (index of the ModRM byte, disp8 multiplier N, and for VSIB forms the index
# register less SIB.index: its XMM/YMM/ZMM base plus VEX/EVEX.X and EVEX.V'; -1 when not VSIB).
_Vec = tuple[int, int, int]


def _special(
    code: bytes, i: int, mode: int, rex: int, osz: int, rep: int, lock: bool
) -> DecodeError | tuple[int, int, Sized, int, Encoding, int, _Vec | None]:
    """C4/C5/62/8F when the next byte makes it a VEX/EVEX/XOP prefix (`_IS_LEGACY` says when not).

    Returns (index after the opcode, opcode, sized entry, ModRM table row, encoding, vector length,
    what `_vector_mem` needs or None when the memory operand is an ordinary one).
    """
    first = code[i - 1]
    b1 = code[i]
    if rex or osz or rep or lock:
        status = _BAD_LOCK if lock else _UNDEFINED
        return _err(status, i, "VEX/EVEX/XOP after a 66/F2/F3/LOCK/REX prefix")
    if first == 0xC5:
        rxb = ~b1 >> 5 & 4
        w = 0
        vmap = 1
        vex_l = b1 >> 2 & 1
        pp = b1 & 3
        i += 1
        encoding = Encoding.VEX
    elif first != 0x62:
        # C4 (three-byte VEX) and 8F (XOP) share one layout: RXB.map, W.vvvv.L.pp.
        b2 = code[i + 1]
        rxb = ~b1 >> 5 & 7
        w = b2 >> 7
        vmap = b1 & 0x1F
        vex_l = b2 >> 2 & 1
        pp = b2 & 3
        i += 2
        encoding = Encoding.VEX if first == 0xC4 else Encoding.XOP
    else:
        p1 = code[i + 1]
        p2 = code[i + 2]
        if b1 & 0x08 or not p1 & 0x04:
            return _err(_UNDEFINED, i + 3, "reserved EVEX bits")
        if mode != 64 and not p2 & 0x08:
            return _err(_UNDEFINED, i + 3, "EVEX.V' names registers 16-31, which exist only in 64-bit mode")
        rxb = ~b1 >> 5 & 7
        w = p1 >> 7
        vmap = b1 & 7
        vex_l = p2 >> 5 & 3
        pp = p1 & 3
        i += 3
        encoding = Encoding.EVEX
    if mode != 64:
        rxb = 0  # R, X and B are ignored outside 64-bit mode
    table = _vector_map(mode, encoding, vmap)
    if table is None:
        return _err(_UNDEFINED, i, "undefined VEX/EVEX/XOP map")
    op = code[i]
    i += 1
    entry = table[op]
    if entry is None:
        return _err(_UNDEFINED, i, "undefined VEX/EVEX/XOP opcode")
    vec = None
    n = 1
    if encoding == Encoding.EVEX:
        rule = T.EVEX_DISP8_N[mode].get(vmap << 11 | pp << 9 | w << 8 | op)
        if rule is not None:
            n = rule[4] if code[i - 2] & 0x10 and rule[4] else rule[vex_l]  # EVEX.b: one element
    if pp == 1 and vmap == 2 and op in T.VSIB_OPCODES.get(encoding, ()):
        vprime = ~code[i - 2] >> 3 & 1 if encoding == Encoding.EVEX else 0
        # The index is as wide as the vector, but half as wide (xmm at least) for dword indexes of qword
        # elements: the even opcodes with W1 (VPGATHERDQ, VGATHERDPD, VSCATTERDPD, ...).
        width = min(vex_l, 2)  # 0 xmm, 1 ymm, 2 zmm
        if w and not op & 1 and width:
            width -= 1
        vec = (i, n, VEC_REG + (width << 5) + ((rxb & 2) << 2 | vprime << 4))
    elif n != 1:
        vec = (i, n, -1)
    return i, op, entry[2 * w], rxb << 8, encoding, vex_l, vec


def _vector_mem(
    code: bytes, vec: _Vec, modrm: int, mem: MemOperand | None
) -> MemOperand | DecodeError | None:
    """The memory operand with an EVEX disp8 multiplied by N, and for VSIB forms the vector index.

    VSIB always has a SIB byte, whose index field names a vector register (100b included: there is no
    "no index"); without one, or with 16-bit addressing, the form is #UD (SDM Vol. 2, 2.3.12).
    """
    pos, n, vsib = vec
    if vsib >= 0:
        if mem is None or mem.addr_size == 2 or modrm & 7 != 4:
            return _err(_UNDEFINED, pos + 1, "VSIB needs a SIB byte and 32/64-bit addressing")
        sib = code[pos + 1]
        index = vsib + (sib >> 3 & 7)
        scale = 1 << (sib >> 6)
    elif mem is None:
        return None
    else:
        index, scale = mem.index, mem.scale
    disp = mem.disp * n if modrm >> 6 == 1 else mem.disp
    return _operand(mem.seg, mem.base, index, scale, disp, mem.addr_size)


_CACHES: dict[int, dict[bytes, Insn | DecodeError]] = {16: {}, 32: {}, 64: {}}


def decode_cached(code: bytes | bytearray | memoryview, mode: int) -> Insn | DecodeError:
    """`decode` memoised on (bytes, mode); the records are immutable, so sharing them is safe.

    Any buffer is accepted; an unhashable one (bytearray) is looked up, and decoded, by its bytes.
    """
    try:
        return _CACHES[mode][code]  # type: ignore[index]  # a hashable buffer finds its bytes' entry
    except KeyError:
        pass
    except TypeError:  # an unhashable buffer (bytearray): the cache is keyed by its bytes
        pass
    key = code if type(code) is bytes else bytes(code)
    cache = _CACHES[mode]
    r = cache.get(key)
    if r is None:
        r = decode(key, mode)
        if len(cache) >= CACHE_LIMIT:
            cache.clear()
        cache[key] = r
    return r
