"""Text for decoded instructions: the mnemonic and the memory operand, for traces and reports."""

from __future__ import annotations

from vmmio.x86.insn import Insn, MemOperand
from vmmio.x86.regs import GPR_NAMES, NO_REG, RIP_REG, SEG_NAMES, vector_name


def format_mem(mem: MemOperand, default_seg: int = 3) -> str:
    """`fs:[rbx+rcx*4+0x10]` style text; the segment is shown only when it is not the default DS."""
    names = GPR_NAMES[mem.addr_size]
    parts: list[str] = []
    if mem.base == RIP_REG:
        parts.append("rip" if mem.addr_size == 8 else "eip")
    elif mem.base != NO_REG:
        parts.append(names[mem.base])
    if mem.index != NO_REG:
        index = vector_name(mem.index) if mem.vsib else names[mem.index]
        parts.append(f"{index}*{mem.scale}" if mem.scale > 1 else index)
    text = "+".join(parts)
    disp = mem.disp
    if disp or not parts:
        if parts and disp < 0:
            text += f"-{-disp:#x}"
        else:
            text += f"{'+' if parts else ''}{disp:#x}"
    seg = f"{SEG_NAMES[mem.seg]}:" if mem.seg != default_seg else ""
    return f"{seg}[{text}]"


def format_insn(insn: Insn) -> str:
    """Mnemonic with its memory operand, if any (register operands are not spelled out)."""
    if insn.mem is None:
        return insn.mnemonic
    return f"{insn.mnemonic} {format_mem(insn.mem)}"


__all__ = ["format_insn", "format_mem"]
