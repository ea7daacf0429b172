"""Intel-syntax text for decoded instructions, for traces, reports and `vmmio decode`.

The decoder's `Insn` keeps what emulation needs; what only text needs (operand kinds, VEX.vvvv, EVEX
masks, broadcast and rounding, second immediates) is recovered here, off the hot path: operand kinds come
from the table row the instruction decoded from (`tables.legacy_form`, `tables.vector_forms`), and the
fields a row refers to are re-read from `insn.raw`.

The style is iced-x86's Intel formatter (tests/test_format.py sets iced up the same way and compares):
lower case, every number in hex with ``0x``, no space after commas, every memory operand with its size
keyword (``dword ptr [rbx+0x8]``), RIP-relative operands as ``[rip+0x10]``, a segment only where an
override prefix changes it, prefixes only where they mean something for the form (``rep``, ``lock``,
``xacquire``, ``bnd``, ``notrack``, ``hint-taken``, ``data16``, ``addr32``...). Branch targets are absolute
when the instruction's address is given; without one they print as ``$+0x..``/``$-0x..``, relative to
the start of the instruction (NASM's ``$``): ``eb fe`` is ``jmp $+0x0``. VEX/EVEX/XOP bytes that the
decoder accepts but no form matches (it knows those opcode spaces coarsely) print as its coarse name and
the memory operand (``vex.0f38.00 [rax]``).

Operand column of the table rows: optional prefix classes, then comma-separated operand codes.

Prefix classes say which prefixes the form gives a meaning to: ``+rep`` (F3 rep, F2 repne), ``+repe``
(repe/repne), ``+bnd`` (F2), ``+repret`` (F3 on ret), ``+hint`` (2E/3E on jcc), ``+notrack`` (3E),
``+hle`` (F2/F3 without LOCK: xacquire/xrelease), ``+xrelease`` (F3 on a store), ``+osz``/``+asz`` (the
operand/address size is not visible in the operands: ``data16``/``addr32`` when 66/67 change it),
``+segop`` (a segment override is appended as an operand, as iced does for maskmovq).

Operand codes are a kind, then a size. Kinds: ``E`` ModRM.rm register or memory, ``G`` ModRM.reg, ``R``
ModRM.rm register only, ``M`` memory only, ``A`` an address without segment or size (lea), ``O`` a far
memory pointer, ``Z`` register in the opcode's low bits, ``S``/``C``/``D`` segment/control/debug register
in ModRM.reg, ``F`` x87 st(i) in ModRM.rm or memory, ``P``/``N``/``Q`` MMX in reg/rm/rm-or-memory,
``V``/``U``/``W`` XMM/YMM/ZMM in reg/rm/rm-or-memory (EVEX.R'/X extend them), ``H`` vector register in
vvvv, ``L`` vector register in imm8[7:4], ``B`` GPR in vvvv, ``K``/``Kh``/``Kr``/``Km`` opmask in
reg/vvvv/rm/EVEX.aaa, ``TMg``/``TMr``/``TMv`` AMX tile in reg/rm/vvvv, ``X``/``Y``/``T`` the implicit
[rSI], es:[rDI] and xlat's [rBX], ``I`` immediate (``Ib2`` the second imm8, ``Ilo`` imm8[3:0]), ``J``
relative branch target, ``Ap`` far pointer; ``rAX``/``aAX`` the accumulator at the operand/address size;
lower-case codes are literal registers (``al``, ``dx``, ``st``, ``fs``...), ``1`` the constant 1. ``a/b``
is ``a`` for a register form and ``b`` for a memory form; a trailing ``~`` drops the operand when
ModRM.reg is 0 (0F 1F /0 is NOP r/m).

Sizes: ``b w d q`` 1/2/4/8 bytes, ``f`` 6, ``t`` 10, ``o`` 16, ``Y`` 32, ``z`` 64, ``k`` 48, none: no
size keyword; ``v`` the operand size, ``vd`` the operand size up to 4, ``v2`` twice it, ``y`` 8 with a
64-bit operand size else 4, ``m`` 8 in 64-bit mode else 4, ``a`` the address size, ``p`` a far pointer
(operand size + 2), ``qo`` 16 with a 64-bit operand size else 8 (cmpxchg8b/16b), ``env``/``sav`` the x87
environment/state; ``x`` the vector length (VEX.L, EVEX.L'L; 512 bits for EVEX.b on registers),
``h``/``r``/``e`` a half/quarter/eighth of it, ``u`` 8 at 128 bits else the vector length (movddup),
``g`` the data of a gather or scatter; by VEX/EVEX.W: ``s`` 4/8, ``wq`` 2/8, ``bd`` 1/4. A vector
register's class (xmm, ymm, zmm) follows from its size; on EVEX memory operands EVEX.b writes the
element size and ``{1toN}`` (the element size comes from the disp8*N table, `tables.EVEX_DISP8_N`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vmmio.x86 import tables as T
from vmmio.x86.insn import Encoding, Insn, MemOperand, OpMap
from vmmio.x86.regs import GPR_NAMES, LEGACY_BYTE_NAMES, NO_REG, RIP_REG, SEG_NAMES, Seg, vector_name

__all__ = ["format_insn", "format_mem"]


def format_mem(mem: MemOperand, default_seg: int = int(Seg.DS)) -> str:
    """`fs:[rbx+rcx*4+0x10]` style text; the segment is shown only when it is not `default_seg`."""
    seg = f"{SEG_NAMES[mem.seg]}:" if mem.seg != default_seg else ""
    return seg + _address(mem)


def _address(mem: MemOperand) -> str:
    """``[base+index*scale+disp]``: a displacement alone is unsigned at the address size."""
    names = GPR_NAMES[mem.addr_size]
    parts: list[str] = []
    if mem.base == RIP_REG:
        parts.append("rip" if mem.addr_size == 8 else "eip")
    elif mem.base != NO_REG:
        parts.append(names[mem.base])
    if mem.index != NO_REG:
        index = vector_name(mem.index) if mem.vsib else names[mem.index]
        # No base: the scale is written even when 1, so [r13*1+0x1] is not read as a base register.
        parts.append(f"{index}*{mem.scale}" if mem.scale > 1 or mem.base == NO_REG else index)
    text = "+".join(parts)
    disp = mem.disp
    if not parts:
        text = f"{disp & ((1 << (8 * mem.addr_size)) - 1):#x}"
    elif disp < 0:
        text += f"-{-disp:#x}"
    elif disp:
        text += f"+{disp:#x}"
    return f"[{text}]"


# Memory size keywords by size in bytes (iced-x86's names; 0: no keyword).
_PTR = {
    1: "byte",
    2: "word",
    4: "dword",
    6: "fword",
    8: "qword",
    10: "tbyte",
    16: "xmmword",
    32: "ymmword",
    48: "mem384",
    64: "zmmword",
}
_FIXED_SIZES = {"b": 1, "w": 2, "d": 4, "q": 8, "f": 6, "t": 10, "o": 16, "Y": 32, "z": 64, "k": 48, "": 0}


@dataclass(slots=True)
class _Fields:
    """What the text needs beyond `Insn`, re-read from the instruction bytes."""

    vvvv: int = 0  # VEX/EVEX.vvvv (with EVEX.V'), not inverted
    w: int = 0
    pp: int = 0
    vmap: int = 0
    vl: int = 16  # vector length in bytes
    reg_hi: int = 0  # EVEX.R' << 4
    rm_hi: int = 0  # EVEX.X << 4 for register operands
    aaa: int = 0  # EVEX opmask register
    z: int = 0
    b: int = 0  # EVEX.b: broadcast (memory) or rounding/SAE (register)
    ll: int = 0  # EVEX.L'L as encoded (the rounding mode with EVEX.b on register forms)


def _fields(insn: Insn) -> _Fields:
    f = _Fields()
    if insn.encoding == Encoding.LEGACY:
        return f
    raw = insn.raw
    i = 0
    skip = _VEX_SKIP_64 if insn.mode == 64 else _VEX_SKIP
    while raw[i] in skip:
        i += 1
    lead = raw[i]
    b1 = raw[i + 1]
    if lead == 0xC5:
        f.vmap, f.w, b2 = 1, 0, b1
    else:
        f.vmap, b2 = b1 & 0x1F, raw[i + 2]
        f.w = b2 >> 7
    if lead == 0x62:
        p2 = raw[i + 3]
        f.vmap = b1 & 7
        f.pp = b2 & 3
        f.vvvv = (~b2 >> 3 & 15) | (0 if p2 & 8 else 16)
        if insn.mode == 64:
            f.reg_hi = 0 if b1 & 0x10 else 16
            f.rm_hi = 0 if b1 & 0x40 else 16
        f.aaa, f.z, f.b, f.ll = p2 & 7, p2 >> 7, p2 >> 4 & 1, p2 >> 5 & 3
        f.vl = 16 << min(f.ll, 2)
    else:
        f.pp = b2 & 3
        f.vvvv = ~b2 >> 3 & 15
        f.vl = 32 if b2 & 4 else 16
    if insn.mode != 64:
        f.vvvv &= 7
    return f


# Prefixes the decoder lets stand before a VEX/EVEX/XOP prefix (a REX only when another prefix follows it).
_VEX_SKIP = frozenset({0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x67})
_VEX_SKIP_64 = _VEX_SKIP | frozenset(range(0x40, 0x50))


def _mask(size: int) -> int:
    return (1 << (8 * size)) - 1


class _Text:
    """Formats one instruction's operands from its operand codes."""

    def __init__(self, insn: Insn, address: int | None, fields: _Fields) -> None:
        self.insn = insn
        self.address = address
        self.f = fields

    def size(self, code: str) -> int:
        fixed = _FIXED_SIZES.get(code)
        return fixed if fixed is not None else _SIZES[code](self)

    def gpr(self, n: int, size: int) -> str:
        if size == 1 and not self.insn.rex and 4 <= n < 8 and self.insn.encoding == Encoding.LEGACY:
            return LEGACY_BYTE_NAMES[n]
        return GPR_NAMES[size][n]

    def mem(self, size: int, with_segment: bool = True, vector: bool = False) -> str:
        mem = self.insn.mem
        assert mem is not None
        text = _address(mem)
        if with_segment:
            text = self._seg_prefix(mem.seg, _SS if mem.base in _STACK_BASES else _DS) + text
        if vector and self.f.b:
            elem = self.broadcast_element()
            if elem:
                return f"{_PTR[elem]} ptr {text}{{1to{size // elem}}}"
        keyword = _PTR.get(size)
        return f"{keyword} ptr {text}" if keyword else text

    def broadcast_element(self) -> int:
        """EVEX.b on a memory operand: the element size, from the disp8*N table (0: no broadcast)."""
        f = self.f
        rule = T.EVEX_DISP8_N[self.insn.mode].get(f.vmap << 11 | f.pp << 9 | f.w << 8 | self.insn.opcode)
        return rule[4] if rule else 0

    def seg_name(self, seg: int, default: int) -> str:
        """The segment when an override prefix changes it (in 64-bit mode only FS and GS can), else ""."""
        if self.insn.seg_override < 0 or seg == default:
            return ""
        if self.insn.mode == 64 and seg < _FS:
            return ""
        return SEG_NAMES[seg]

    def _seg_prefix(self, seg: int, default: int) -> str:
        name = self.seg_name(seg, default)
        return f"{name}:" if name else ""

    def string_mem(self, size: int, reg: int, fixed_es: bool) -> str:
        """Implicit [rSI]/[rBX] (segment overridable) and es:[rDI] operands of string ops and xlat."""
        name = GPR_NAMES[self.insn.addr_size][reg]
        over = self.insn.seg_override
        # iced writes es:[rDI] out only when an override prefix names another segment for the source.
        prefix = self._seg_prefix(over, _DS) if over >= 0 else ""
        if fixed_es and prefix:
            prefix = "es:"
        return f"{_PTR[size]} ptr {prefix}[{name}]"

    def imm(self, value: int, size: int) -> str:
        return f"{value & _mask(size):#x}"

    def branch(self) -> str:
        """The target: absolute (wrapped like the CPU's IP) with an address, else relative to it."""
        insn = self.insn
        rel = insn.length + insn.imm
        if self.address is None:
            return f"$+{rel:#x}" if rel >= 0 else f"$-{-rel:#x}"
        return f"{(self.address + rel) & _mask(insn.opsize):#x}"

    def operand(self, code: str) -> str:
        if "/" in code:
            reg_form, mem_form = code.split("/")
            return self.operand(reg_form if self.insn.mem is None else mem_form)
        kind, size_code = _split(code)
        if size_code in _FPU_AREAS:
            return self.fpu_area(_FPU_AREAS[size_code])
        handler = _KINDS.get(kind)
        if handler is not None:
            return handler(self, size_code)
        if kind[0].islower():
            return kind  # a literal register
        raise ValueError(f"unknown operand code {code!r}")

    def rm_gpr(self, size_code: str) -> str:
        """E/M/R: ModRM.rm as a GPR, or the memory operand (vector rows default to the vector size)."""
        insn = self.insn
        size = self.size(size_code or ("x" if insn.encoding != Encoding.LEGACY and insn.mem else ""))
        return self.mem(size) if insn.mem is not None else self.gpr(insn.rm, size)

    def rm_mmx(self, size_code: str) -> str:
        insn = self.insn
        return self.mem(self.size(size_code or "q")) if insn.mem is not None else f"mm{insn.rm & 7}"

    def rm_vector(self, size_code: str) -> str:
        insn = self.insn
        if insn.mem is None:
            return self.vreg(insn.rm + self.f.rm_hi, size_code)
        size = self.size(size_code or self.default_vector_size())
        return self.mem(size, vector=insn.encoding == Encoding.EVEX)

    def rm_x87(self, size_code: str) -> str:
        insn = self.insn
        return self.mem(self.size(size_code)) if insn.mem is not None else f"st({insn.rm & 7})"

    def immediate(self, size_code: str) -> str:
        insn = self.insn
        if size_code == "b2":
            return self.imm(insn.raw[-1], 1)
        if size_code == "lo":  # VPERMIL2PS/PD: imm8[3:0] (imm8[7:4] is the fourth register)
            return self.imm(insn.imm & 15, 1)
        return self.imm(insn.imm, self.size(size_code))

    def is4(self, size_code: str) -> str:
        """The register in imm8[7:4] (VEX is4 operands: blendv, FMA4, XOP)."""
        reg = self.insn.raw[-1] >> 4
        return self.vreg(reg if self.insn.mode == 64 else reg & 7, size_code)

    def far_pointer(self) -> str:
        insn = self.insn
        return f"far {insn.raw[-2] | insn.raw[-1] << 8:#x}:{insn.imm & _mask(insn.opsize):#x}"

    def fpu_area(self, sizes: tuple[str, str]) -> str:
        """x87 environment/state: iced names the layout only when 66 changes it from the mode's."""
        insn = self.insn
        if insn.opsize == (4 if insn.mode == 16 else 2):
            return f"{sizes[insn.opsize == 4]} ptr {self.mem(0)}"
        return self.mem(0)

    def default_vector_size(self) -> str:
        return "x" if self.insn.encoding != Encoding.LEGACY else "o"

    def vreg(self, n: int, size_code: str) -> str:
        size = self.size(size_code or self.default_vector_size())
        cls = "xmm" if size <= 16 else "ymm" if size == 32 else "zmm"
        return f"{cls}{n}"


# Size codes beyond the fixed ones (see the module docstring).
_SIZES: dict[str, Callable[[_Text], int]] = {
    "v": lambda t: t.insn.opsize,
    "vd": lambda t: min(t.insn.opsize, 4),
    "v2": lambda t: 2 * t.insn.opsize,
    "y": lambda t: 8 if t.insn.opsize == 8 else 4,
    "m": lambda t: 8 if t.insn.mode == 64 else 4,
    "a": lambda t: t.insn.addr_size,
    "p": lambda t: t.insn.opsize + 2,
    "qo": lambda t: 16 if t.insn.opsize == 8 else 8,
    "x": lambda t: t.f.vl,
    "h": lambda t: t.f.vl // 2,
    "r": lambda t: t.f.vl // 4,
    "e": lambda t: t.f.vl // 8,
    "u": lambda t: 8 if t.f.vl == 16 else t.f.vl,
    # Gather/scatter data: half as wide with qword indexes of dword elements (odd opcodes, W0).
    "g": lambda t: max(16, t.f.vl // 2) if t.insn.opcode & 1 and not t.f.w else t.f.vl,
    "s": lambda t: (4, 8)[t.f.w],
    "wq": lambda t: (2, 8)[t.f.w],
    "bd": lambda t: (1, 4)[t.f.w],
}
# Opmask operands by size code: ModRM.reg, vvvv, ModRM.rm, EVEX.aaa.
_MASKS: dict[str, Callable[[_Text], int]] = {
    "": lambda t: t.insn.reg,
    "h": lambda t: t.f.vvvv,
    "r": lambda t: t.insn.rm,
    "m": lambda t: t.f.aaa,
}
# fldenv/fnstenv and frstor/fnsave areas: (16-bit layout, 32-bit layout) keywords.
_FPU_AREAS = {"env": ("fpuenv14", "fpuenv28"), "sav": ("fpustate94", "fpustate108")}
# AMX tile registers in ModRM.reg, ModRM.rm and VEX.vvvv.
_TILES: dict[str, Callable[[_Text], int]] = {
    "TMg": lambda t: t.insn.reg,
    "TMr": lambda t: t.insn.rm,
    "TMv": lambda t: t.f.vvvv,
}


def _tile(reg: Callable[[_Text], int]) -> Callable[[_Text, str], str]:
    return lambda t, s: f"tmm{reg(t) & 7}"


# Operand kinds: (formatter, size code) -> text.
_KINDS: dict[str, Callable[[_Text, str], str]] = {
    "E": _Text.rm_gpr,
    "M": _Text.rm_gpr,
    "R": _Text.rm_gpr,
    "G": lambda t, s: t.gpr(t.insn.reg, t.size(s)),
    "Z": lambda t, s: t.gpr(t.insn.reg, t.size(s)),
    "B": lambda t, s: t.gpr(t.f.vvvv & 15, t.size(s)),
    "rAX": lambda t, s: GPR_NAMES[t.insn.opsize][0],
    "aAX": lambda t, s: GPR_NAMES[t.insn.addr_size][0],
    "I": _Text.immediate,
    "1": lambda t, s: "0x1",
    "J": lambda t, s: t.branch(),
    "Ap": lambda t, s: t.far_pointer(),
    "A": lambda t, s: t.mem(0, with_segment=False),
    "O": lambda t, s: "far " + t.mem(t.size(s)),
    "X": lambda t, s: t.string_mem(t.size(s), 6, False),
    "Y": lambda t, s: t.string_mem(t.size(s), 7, True),
    "T": lambda t, s: t.string_mem(1, 3, False),
    "S": lambda t, s: SEG_NAMES[t.insn.reg & 7],
    "C": lambda t, s: f"cr{t.insn.reg}",
    "D": lambda t, s: f"dr{t.insn.reg}",
    "F": _Text.rm_x87,
    "P": lambda t, s: f"mm{t.insn.reg & 7}",
    "N": _Text.rm_mmx,
    "Q": _Text.rm_mmx,
    "V": lambda t, s: t.vreg(t.insn.reg + t.f.reg_hi, s),
    "U": _Text.rm_vector,
    "W": _Text.rm_vector,
    "H": lambda t, s: t.vreg(t.f.vvvv, s),
    "L": _Text.is4,
    "K": lambda t, s: f"k{_MASKS[s](t) & 7}",
    **{kind: _tile(reg) for kind, reg in _TILES.items()},
}
_WHOLE_KINDS = frozenset({"rAX", "aAX", "Ap", "1", *_TILES})


def _split(code: str) -> tuple[str, str]:
    """(kind, size code); literal registers and ``rAX``/``Ap`` are whole kinds."""
    if code in _WHOLE_KINDS or code[0].islower():
        return code, ""
    return code[0], code[1:]


_PFX_INDEX = {0: 0, 0xF3: 2, 0xF2: 3}


def _mandatory_prefix(insn: Insn) -> int:
    """The dispatch row the decoder chose: F2/F3 (the last one) before 66."""
    if insn.rep:
        return _PFX_INDEX[insn.rep]
    return 1 if insn.opsize_prefix else 0


@dataclass(frozen=True, slots=True)
class _Spec:
    """A row's operand column, parsed: prefix classes (``+bnd``...) and operand codes."""

    mnemonic: str
    prefixes: frozenset[str]
    operands: tuple[str, ...]
    default_opsize: int  # the form's operand size without 66/REX.W (for data16/data32/data64)
    rounding: str | None = None  # vector rows: what EVEX.b means on a register form


def _parse_spec(mnemonic: str, ops: str, default_opsize: int, rounding: str | None = None) -> _Spec:
    words = ops.split()
    classes = frozenset(w[1:] for w in words if w.startswith("+"))
    rest = [w for w in words if not w.startswith("+")]
    operands = tuple(rest[0].split(",")) if rest else ()
    return _Spec(mnemonic, classes, operands, default_opsize, rounding)


def _vector_spec(insn: Insn, f: _Fields) -> _Spec | None:
    """The VEX/EVEX row for the instruction: W, L, mod and ModRM.reg decide between candidates."""
    rows = T.vector_forms().get((int(insn.encoding), f.vmap, f.pp, insn.opcode), ())
    vex_l = insn.vex_l
    mod = "mem" if insn.mem is not None else "reg"
    reg = insn.modrm >> 3 & 7
    for row in rows:
        if row.w is not None and row.w != f.w:
            continue
        if row.l is not None and row.l != vex_l:
            continue
        if (row.mod is not None and row.mod != mod) or (row.reg is not None and row.reg != reg):
            continue
        names = row.mnemonic.split("|")
        w = f.w
        if insn.mode != 64 and any(c[:1] in ("E", "G", "R") and c.endswith("y") for c in row.ops.split(",")):
            w = 0  # the W1 name is for a 64-bit GPR, which W1 does not select outside 64-bit mode
        mnemonic = names[w] if len(names) == 2 else names[0]
        return _parse_spec(mnemonic, row.ops, insn.opsize, row.rounding)
    return None


def _legacy_spec(insn: Insn) -> _Spec | None:
    if insn.opmap == OpMap.M3DNOW:
        return _parse_spec(insn.mnemonic, "P,Q", insn.opsize)
    opmap = OpMap.ONE if insn.opmap == OpMap.X87 else insn.opmap
    form = T.legacy_form(insn.mode, opmap, insn.opcode, _mandatory_prefix(insn), insn.modrm)
    if form is None:
        return None
    ops = form.ops
    mnemonic = insn.mnemonic
    if insn.opmap == OpMap.ONE and insn.opcode == 0x90 and mnemonic == "nop":
        if insn.opsize_prefix or insn.rex & 8:
            mnemonic = "xchg"  # with 66 or REX.W, 90 is spelled as the xchg it is
        else:
            ops = ""
    default = T.opsizes(insn.mode, form.flags)[0]
    return _parse_spec(mnemonic, ops, default)


def format_insn(insn: Insn, address: int | None = None) -> str:
    """Intel syntax for one decoded instruction: prefixes, mnemonic and every operand.

    `address` is where the instruction starts; relative branch targets are then absolute.
    """
    fields = _fields(insn)
    if insn.encoding == Encoding.LEGACY:
        spec = _legacy_spec(insn)
    elif insn.encoding in (Encoding.VEX, Encoding.EVEX, Encoding.XOP):
        spec = _vector_spec(insn, fields)
    else:
        spec = None
    if spec is None:
        # No operand row: the decoder's own name and the memory operand.
        if insn.mem is None:
            return insn.mnemonic
        return f"{insn.mnemonic} {format_mem(insn.mem)}"
    text = _Text(insn, address, fields)
    if insn.encoding == Encoding.EVEX and fields.b and insn.mem is None:
        fields.vl = 64  # EVEX.b on a register form: L'L is the rounding mode, the vector is 512 bits
    operands = [text.operand(code.rstrip("~")) for code in spec.operands if not _dropped(insn, code)]
    if insn.encoding == Encoding.EVEX and operands:
        operands[0] += _decorations(insn, fields, spec)
    if "segop" in spec.prefixes and insn.seg_override >= 0:
        seg = text.seg_name(insn.seg_override, _DS)
        if seg:
            operands.append(seg)
    mnemonic = _DISPLAY_NAMES.get(spec.mnemonic, spec.mnemonic)
    head = " ".join([*_prefixes(insn, spec), mnemonic])
    return f"{head} {','.join(operands)}" if operands else head


# Spellings of the formatter that differ from the decoder's mnemonic (the decoder's names are what the
# emulator and the other tests key on).
_DISPLAY_NAMES = {"wait": "fwait", "xlatb": "xlat", "retf": "ret far", "sal": "shl"}


_ROUNDING = ("{rne-sae}", "{rd-sae}", "{ru-sae}", "{rz-sae}")


def _decorations(insn: Insn, f: _Fields, spec: _Spec) -> str:
    """EVEX opmask, zeroing and rounding, written after the first operand as iced does."""
    text = ""
    if f.aaa and "Km" not in spec.operands:
        text += f"{{k{f.aaa}}}"
    if f.z:
        text += "{z}"
    if f.b and insn.mem is None and spec.rounding:
        text += _ROUNDING[f.ll] if spec.rounding == "er" else "{sae}"
    return text


def _dropped(insn: Insn, code: str) -> bool:
    """``Gv~``: the reg operand of the reserved-NOP space, which iced leaves out for 0F 1F /0."""
    return code.endswith("~") and insn.modrm >> 3 & 7 == 0


def _prefixes(insn: Insn, spec: _Spec) -> list[str]:
    """Prefix words, each only where the row's prefix classes say the prefix means something."""
    out: list[str] = []
    classes = spec.prefixes
    rep = insn.rep
    seg = insn.seg_override
    if "osz" in classes and insn.opsize != spec.default_opsize:
        out.append(f"data{insn.opsize * 8}")
    if "asz" in classes and insn.addr_size != (8 if insn.mode == 64 else insn.mode // 8):
        out.append(f"addr{insn.addr_size * 8}")
    if "hint" in classes and seg in (_CS, _DS):
        out.append("hint-not-taken" if seg == _CS else "hint-taken")
    if rep:
        if "rep" in classes:
            out.append("rep" if rep == 0xF3 else "repne")
        elif "repe" in classes:
            out.append("repe" if rep == 0xF3 else "repne")
        elif insn.lock or ("hle" in classes and insn.mem is not None):
            out.append("xrelease" if rep == 0xF3 else "xacquire")
        elif "xrelease" in classes and rep == 0xF3 and insn.mem is not None:
            out.append("xrelease")
        elif "bnd" in classes and rep == 0xF2:
            out.append("bnd")
        elif "repret" in classes and rep == 0xF3:
            out.append("rep")
    if "notrack" in classes and seg == _DS and insn.mode != 16:
        out.append("notrack")
    if insn.lock:
        out.append("lock")
    return out


_CS, _SS, _DS, _FS = (int(s) for s in (Seg.CS, Seg.SS, Seg.DS, Seg.FS))
_STACK_BASES = frozenset({4, 5})  # rSP/rBP bases (and 16-bit BP forms) default to SS
