"""vmmio's decoding of one real instruction against each oracle, field by field, and the opcode family an
instruction belongs to (for the disagreement and coverage tables).

iced-x86 is compared on its decoded fields; capstone and objdump only produce text, so their memory
operand is parsed from Intel syntax into an order-free form (registers with scales, displacement,
segment) that vmmio's `MemOperand` is brought to as well. The iced register mapping, mnemonic aliases
and 64-bit segment normalisation are the ones tests/test_decode_oracles.py uses (imported from it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from iced_x86 import (
    Code,
    Code_,
    EncodingKind,
    OpCodeInfo,
    OpCodeOperandKind,
    OpCodeTableKind,
    Register,
    RegisterInfo,
)
from test_decode_oracles import _ICED_MNEMONIC, _MNEMONIC_ALIASES, _reg

from oracles_real.corpus import Sample, iced_memory
from vmmio.x86.insn import DecodeError, Encoding, Insn, MemOperand
from vmmio.x86.regs import GPR_NAMES, NO_REG, RIP_REG, SEG_NAMES, XMM_REG, YMM_REG, ZMM_REG, Seg

__all__ = [
    "FAMILIES",
    "NO_ACCESS",
    "Mismatch",
    "TextMem",
    "compare_iced",
    "compare_text",
    "family",
    "parse_mem_text",
]


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One field on which vmmio and an oracle differ."""

    oracle: str
    field: str
    ours: object
    theirs: object

    def __str__(self) -> str:
        return f"{self.field}: vmmio {self.ours}, {self.oracle} {self.theirs}"


_STACK_BASES = frozenset({Register.RSP, Register.RBP, Register.ESP, Register.EBP})


@cache
def _iced_opsize(code: Code_) -> int:
    """iced's operand size for a legacy form in bytes (0 where the form has none: byte forms, x87...)."""
    info = OpCodeInfo(code)
    if info.encoding != EncodingKind.LEGACY:
        return 0
    return int(info.operand_size) // 8


def _iced_addr_size(s: Sample) -> int:
    ins = s.iced
    base, index = ins.memory_base, ins.memory_index
    if base in (Register.RIP, Register.EIP):
        return 8 if base == Register.RIP else 4
    if base != Register.NONE:
        return int(RegisterInfo(base).size)
    if index != Register.NONE and RegisterInfo(index).size <= 8:
        return int(RegisterInfo(index).size)
    return int(ins.memory_displ_size)


def compare_iced(s: Sample, ours: Insn | DecodeError) -> list[Mismatch]:
    """Status, length, mnemonic (legacy), operand size (where iced has one) and the memory operand."""
    ins = s.iced

    def m(field: str, a: object, b: object) -> Mismatch:
        return Mismatch("iced", field, a, b)

    if isinstance(ours, DecodeError):
        theirs = f"{_ICED_MNEMONIC[ins.mnemonic]}/{ins.len}"
        return [m("status", f"{ours.status.name} ({ours.detail})", theirs)]
    if ours.length != ins.len:
        return [m("length", ours.length, ins.len)]
    out = []
    if ours.encoding == Encoding.LEGACY:
        name = _ICED_MNEMONIC[ins.mnemonic]
        if name != ours.mnemonic and (name, ours.mnemonic) not in _MNEMONIC_ALIASES:
            out.append(m("mnemonic", ours.mnemonic, name))
        osz = _iced_opsize(ins.code)
        if osz and osz != ours.opsize:
            out.append(m("opsize", ours.opsize, osz))
    explicit = iced_memory(ins) == 1 and not (ours.mem is None and ours.modrm < 0)  # xlat: implicit
    if (ours.mem is not None) != explicit:
        out.append(m("memory operand", ours.mem, "one" if explicit else "none"))
        return out
    if ours.mem is None:
        return out
    mem = ours.mem
    asz = _iced_addr_size(s)
    if mem.addr_size != asz:
        out.append(m("addr_size", mem.addr_size, asz))
    seg = int(ins.memory_segment) - int(Register.ES)
    if ours.mode == 64 and seg < int(Seg.FS):
        seg = int(Seg.SS) if ins.memory_base in _STACK_BASES else int(Seg.DS)
    if mem.seg != seg:
        out.append(m("segment", SEG_NAMES[mem.seg], SEG_NAMES[seg]))
    if mem.base != _reg(ins.memory_base):
        out.append(m("base", mem.base, _reg(ins.memory_base)))
    index = _reg(ins.memory_index)
    if mem.index != index:
        out.append(m("index", mem.index, index))
    scale = ins.memory_index_scale if index != NO_REG else 1
    if mem.scale != scale:
        out.append(m("scale", mem.scale, scale))
    mask = (1 << 8 * mem.addr_size) - 1
    disp = mem.disp + (s.address + ours.length if mem.base == RIP_REG else 0)  # iced: absolute target
    if disp & mask != ins.memory_displacement & mask:
        out.append(m("displacement", hex(disp & mask), hex(ins.memory_displacement & mask)))
    return out


# ---------------------------------------------------------------------------------------------------
# Intel-syntax memory operands as capstone and objdump print them.

_REG_NUM: dict[str, tuple[int, int]] = {}  # name -> (number, address size it implies)
for _size in (8, 4, 2):
    for _n, _name in enumerate(GPR_NAMES[_size]):
        _REG_NUM[_name] = (_n, _size)
_REG_NUM.update({"rip": (RIP_REG, 8), "eip": (RIP_REG, 4), "riz": (NO_REG, 8), "eiz": (NO_REG, 4)})
_VECTOR = re.compile(r"^([xyz])mm(\d+)$")
_VECTOR_BASE = {"x": XMM_REG, "y": YMM_REG, "z": ZMM_REG}
_MEM = re.compile(r"(?:\b([c-gs]s):)?\[([^\]]*)\]|\b([c-gs]s):(-?(?:0x[0-9a-f]+|\d+))\b")
_TERM = re.compile(r"([+-]?)([^+-]+)")


@dataclass(frozen=True, slots=True)
class TextMem:
    """A memory operand in a form both sides can be brought to: registers as (number, scale) pairs in
    sorted order (which register was base and which index is not always visible in the text),
    the displacement, the explicit segment if printed, and the address size the registers imply."""

    seg: int | None
    regs: tuple[tuple[int, int], ...]
    disp: int
    addr_size: int | None


def _number(text: str) -> int | None:
    try:
        return int(text, 0)
    except ValueError:
        return None


def parse_mem_text(text: str) -> TextMem | None:
    """The first memory operand in `text` (an operand string), or None if there is none or it does not
    parse. `seg:number` without brackets is an absolute address (moffs, or objdump's disp32 form)."""
    text = text.split("#", 1)[0].split("<", 1)[0].lower()
    found = _MEM.search(text)
    if found is None:
        return None
    seg_name, inner, abs_seg, abs_num = found.groups()
    seg_name = seg_name or abs_seg
    seg = SEG_NAMES.index(seg_name) if seg_name else None
    if inner is None:
        value = _number(abs_num)
        return None if value is None else TextMem(seg, (), value, None)
    regs: list[tuple[int, int]] = []
    disp = 0
    asz: int | None = None
    for sign, term in _TERM.findall(inner.replace(" ", "")):
        name, _, scale_text = term.partition("*")
        value = _number(name)
        if value is not None and not scale_text:
            disp += -value if sign == "-" else value
            continue
        scale = _number(scale_text) if scale_text else 1
        if scale is None or sign == "-":
            return None
        vec = _VECTOR.match(name)
        if vec:
            regs.append((_VECTOR_BASE[vec.group(1)] + int(vec.group(2)), scale))
            continue
        if name not in _REG_NUM:
            return None
        num, size = _REG_NUM[name]
        asz = size
        if num != NO_REG:
            regs.append((num, scale))
    return TextMem(seg, tuple(sorted(regs)), disp, asz)


def _default_seg(mem: MemOperand) -> int:
    """The segment an operand uses without override: SS for BP/SP-based forms, DS otherwise."""
    if mem.addr_size == 2:
        stack = mem.base == 5  # [bp+si], [bp+di], [bp+disp]
    else:
        stack = mem.base in (4, 5)
    return int(Seg.SS) if stack else int(Seg.DS)


def compare_text(oracle: str, mode: int, ours: Insn, length: int, text: str) -> list[Mismatch]:
    """Length and memory operand against an oracle's Intel-syntax text for the same bytes."""
    if length != ours.length:
        return [Mismatch(oracle, "length", ours.length, length)]
    if ours.mem is None:
        return []
    theirs = parse_mem_text(text)
    if theirs is None:
        return [Mismatch(oracle, "memory text", ours.mem, text)]
    mem = ours.mem
    out = []
    regs = [(mem.base, 1)] if mem.base != NO_REG else []
    if mem.index != NO_REG:
        regs.append((mem.index, mem.scale))
    if tuple(sorted(regs)) != theirs.regs:
        out.append(Mismatch(oracle, "registers", tuple(sorted(regs)), theirs.regs))
    mask = (1 << 8 * mem.addr_size) - 1
    if mem.disp & mask != theirs.disp & mask:
        out.append(Mismatch(oracle, "displacement", hex(mem.disp & mask), hex(theirs.disp & mask)))
    if theirs.addr_size is not None and theirs.addr_size != mem.addr_size:
        out.append(Mismatch(oracle, "addr_size", mem.addr_size, theirs.addr_size))
    seg = theirs.seg
    if seg is None or (mode == 64 and seg < int(Seg.FS)):
        # The text shows overrides only (objdump also writes ds: on absolute addresses), and 64-bit mode
        # ignores ES/CS/SS/DS: the default segment then applies.
        seg = _default_seg(mem)
    if mem.seg != seg:
        out.append(Mismatch(oracle, "segment", SEG_NAMES[mem.seg], SEG_NAMES[seg]))
    return out


# ---------------------------------------------------------------------------------------------------
# Opcode families, decided from iced's view of the instruction (not vmmio's), cached per iced Code.

NO_ACCESS = "lea/nop/prefetch (no access)"
FAMILIES = (
    "mov",
    "movzx/movsx",
    "alu",
    "test",
    "bt*",
    "push/pop",
    "string",
    "xchg/cmpxchg/xadd",
    "shift/rotate",
    "mul/div",
    "setcc/cmovcc",
    "call/jmp",
    "cache flush",
    "sse/avx moves",
    "sse/avx other",
    "x87",
    "system/state",
    "other",
    NO_ACCESS,
)

_NAMED = {
    "mov": "mov",
    "movzx": "movzx/movsx",
    "movsx": "movzx/movsx",
    "movsxd": "movzx/movsx",
    "test": "test",
    "call": "call/jmp",
    "jmp": "call/jmp",
    "push": "push/pop",
    "pop": "push/pop",
    "lea": NO_ACCESS,
}
for _m in ("add", "or", "adc", "sbb", "and", "sub", "xor", "cmp", "inc", "dec", "neg", "not"):
    _NAMED[_m] = "alu"
for _m in ("bt", "bts", "btr", "btc"):
    _NAMED[_m] = "bt*"
for _m in ("xchg", "cmpxchg", "cmpxchg8b", "cmpxchg16b", "xadd"):
    _NAMED[_m] = "xchg/cmpxchg/xadd"
for _m in ("shl", "shr", "sar", "sal", "rol", "ror", "rcl", "rcr", "shld", "shrd"):
    _NAMED[_m] = "shift/rotate"
for _m in ("mul", "imul", "div", "idiv"):
    _NAMED[_m] = "mul/div"
for _m in ("clflush", "clflushopt", "clwb"):
    _NAMED[_m] = "cache flush"
for _m in [
    "lgdt",
    "sgdt",
    "lidt",
    "sidt",
    "lldt",
    "sldt",
    "ltr",
    "str",
    "lmsw",
    "smsw",
    "invlpg",
    "verr",
    "verw",
]:
    _NAMED[_m] = "system/state"

_STRING_KINDS = frozenset({OpCodeOperandKind.SEG_RSI, OpCodeOperandKind.ES_RDI, OpCodeOperandKind.SEG_RDI})
_VECTOR_KINDS = frozenset(
    v
    for k, v in vars(OpCodeOperandKind).items()
    if isinstance(v, int) and k.split("_")[0] in ("MM", "XMM", "YMM", "ZMM", "K", "TMM", "XMMP3", "ZMMP3")
)
_STATE_PREFIXES = ("fxsave", "fxrstor", "xsave", "xrstor", "ldmxcsr", "stmxcsr", "vldmxcsr", "vstmxcsr")
_VECTOR_MOVES = ("mov", "lddqu", "broadcast", "pbroadcast", "maskmov", "pmaskmov")


@cache
def family(code: Code_) -> str:
    """The opcode family of an iced Code (one row of the coverage table)."""
    if code == Code.INVALID:
        return "other"
    info = OpCodeInfo(code)
    name = _ICED_MNEMONIC[info.mnemonic]
    kinds = [info.op_kind(i) for i in range(info.op_count)]
    if info.is_nop or name in ("reservednop", "nop") or name.startswith("prefetch"):
        return NO_ACCESS
    if name.startswith(_STATE_PREFIXES):
        return "system/state"
    legacy = info.encoding == EncodingKind.LEGACY
    if not legacy or any(k in _VECTOR_KINDS for k in kinds):
        bare = name[1:] if not legacy and name.startswith("v") else name
        return "sse/avx moves" if bare.startswith(_VECTOR_MOVES) else "sse/avx other"
    if any(k in _STRING_KINDS for k in kinds):
        return "string"
    if info.table == OpCodeTableKind.NORMAL and 0xD8 <= info.op_code <= 0xDF:
        return "x87"
    if name in _NAMED:
        return _NAMED[name]
    if name.startswith(("set", "cmov")) and not name.startswith("setssbsy"):
        return "setcc/cmovcc"
    return "other"
