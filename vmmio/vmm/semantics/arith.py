"""Integer arithmetic and logic with a memory operand: the ALU ops, TEST, NOT, NEG, INC, DEC."""

from __future__ import annotations

from vmmio.vmm.semantics.context import Exec, Operand, Steps
from vmmio.vmm.semantics.registry import emulates
from vmmio.x86 import flags
from vmmio.x86.flags import AluOp
from vmmio.x86.insn import Insn, OpMap

_CMP = int(AluOp.CMP)


def _rm_value(x: Exec, i: Insn, w: int, writes: bool) -> Operand:
    """The r/m operand's value: a register, or a read (checked for write when the result goes back)."""
    if i.mem is None:
        return x.get(i.rm, w)
    return (yield x.load_for_update(w) if writes else x.load(w))


def _rm_write(x: Exec, i: Insn, w: int, value: int) -> Steps:
    if i.mem is None:
        x.set(i.rm, w, value)
    else:
        yield x.store(w, value)


# 00-3F: the eight ALU operations in their four r/m forms (op = opcode >> 3).
_ALU_RM_FORMS = [base + form for base in range(0, 0x40, 8) for form in range(4)]


@emulates(OpMap.ONE, _ALU_RM_FORMS)
def alu_rm(x: Exec, i: Insn) -> Steps:
    op = i.opcode >> 3
    w = 1 if i.opcode & 1 == 0 else i.opsize
    if i.opcode & 2:  # reg <- reg OP r/m
        src = yield from _rm_value(x, i, w, False)
        res, fl = flags.alu(op, w, x.get(i.reg, w), src, x.rflags)
        if op != _CMP:
            x.set(i.reg, w, res)
    else:  # r/m <- r/m OP reg
        dst = yield from _rm_value(x, i, w, op != _CMP)
        res, fl = flags.alu(op, w, dst, x.get(i.reg, w), x.rflags)
        if op != _CMP:
            yield from _rm_write(x, i, w, res)
    x.set_flags(fl)


@emulates(OpMap.ONE, (0x80, 0x81, 0x82, 0x83))
def alu_imm(x: Exec, i: Insn) -> Steps:
    op = i.reg & 7
    w = i.opsize if i.opcode in (0x81, 0x83) else 1
    dst = yield from _rm_value(x, i, w, op != _CMP)
    res, fl = flags.alu(op, w, dst, i.imm, x.rflags)
    if op != _CMP:
        yield from _rm_write(x, i, w, res)
    x.set_flags(fl)


@emulates(OpMap.ONE, (0x84, 0x85))
def test_rm(x: Exec, i: Insn) -> Steps:
    w = 1 if i.opcode == 0x84 else i.opsize
    a = yield from _rm_value(x, i, w, False)
    x.set_flags(flags.test(w, a, x.get(i.reg, w), x.rflags))


@emulates(OpMap.ONE, (0xF6, 0xF7), (0, 1))
def test_imm(x: Exec, i: Insn) -> Steps:
    w = 1 if i.opcode == 0xF6 else i.opsize
    a = yield from _rm_value(x, i, w, False)
    x.set_flags(flags.test(w, a, i.imm, x.rflags))


@emulates(OpMap.ONE, (0xF6, 0xF7), (2,))
def not_rm(x: Exec, i: Insn) -> Steps:
    w = 1 if i.opcode == 0xF6 else i.opsize
    a = yield from _rm_value(x, i, w, True)
    yield from _rm_write(x, i, w, ~a)


@emulates(OpMap.ONE, (0xF6, 0xF7), (3,))
def neg_rm(x: Exec, i: Insn) -> Steps:
    w = 1 if i.opcode == 0xF6 else i.opsize
    a = yield from _rm_value(x, i, w, True)
    res, fl = flags.neg(w, a, x.rflags)
    yield from _rm_write(x, i, w, res)
    x.set_flags(fl)


@emulates(OpMap.ONE, (0xFE, 0xFF), (0, 1))
def inc_dec_rm(x: Exec, i: Insn) -> Steps:
    w = 1 if i.opcode == 0xFE else i.opsize
    a = yield from _rm_value(x, i, w, True)
    res, fl = (flags.dec if i.reg & 1 else flags.inc)(w, a, x.rflags)
    yield from _rm_write(x, i, w, res)
    x.set_flags(fl)
