"""Integer arithmetic and logic with a memory operand: the ALU ops, TEST, NOT, NEG, INC, DEC."""

from __future__ import annotations

from vmmio.vmm.semantics.context import Exec, Steps
from vmmio.vmm.semantics.registry import emulates
from vmmio.x86 import flags
from vmmio.x86.flags import AluOp
from vmmio.x86.insn import Insn, OpMap

_CMP = int(AluOp.CMP)
_TO_REG = 2  # opcode bit of the ALU r/m forms: reg <- reg OP r/m (else r/m <- r/m OP reg)

# 00-3F: the eight ALU operations in their four r/m forms (op = opcode >> 3).
_ALU_RM_FORMS = [base + form for base in range(0, 0x40, 8) for form in range(4)]


@emulates(OpMap.ONE, _ALU_RM_FORMS)
def alu_rm(x: Exec, i: Insn) -> Steps:
    op = i.opcode >> 3
    w = i.width
    if i.opcode & _TO_REG:
        src = yield from x.rm_read(w)
        res, fl = flags.alu(op, w, x.get(i.reg, w), src, x.rflags)
        if op != _CMP:
            x.set(i.reg, w, res)
    else:
        dst = yield from x.rm_read(w, op != _CMP)
        res, fl = flags.alu(op, w, dst, x.get(i.reg, w), x.rflags)
        if op != _CMP:
            yield from x.rm_write(w, res)
    x.set_flags(fl)


@emulates(OpMap.ONE, (0x80, 0x81, 0x82, 0x83))
def alu_imm(x: Exec, i: Insn) -> Steps:
    op = i.reg & 7
    w = i.width
    dst = yield from x.rm_read(w, op != _CMP)
    res, fl = flags.alu(op, w, dst, i.imm, x.rflags)
    if op != _CMP:
        yield from x.rm_write(w, res)
    x.set_flags(fl)


@emulates(OpMap.ONE, (0x84, 0x85))
def test_rm(x: Exec, i: Insn) -> Steps:
    a = yield from x.rm_read(i.width)
    x.set_flags(flags.test(i.width, a, x.get(i.reg, i.width), x.rflags))


@emulates(OpMap.ONE, (0xF6, 0xF7), (0, 1))
def test_imm(x: Exec, i: Insn) -> Steps:
    a = yield from x.rm_read(i.width)
    x.set_flags(flags.test(i.width, a, i.imm, x.rflags))


@emulates(OpMap.ONE, (0xF6, 0xF7), (2,))
def not_rm(x: Exec, i: Insn) -> Steps:
    a = yield from x.rm_read(i.width, True)
    yield from x.rm_write(i.width, ~a)


@emulates(OpMap.ONE, (0xF6, 0xF7), (3,))
def neg_rm(x: Exec, i: Insn) -> Steps:
    a = yield from x.rm_read(i.width, True)
    res, fl = flags.neg(i.width, a, x.rflags)
    yield from x.rm_write(i.width, res)
    x.set_flags(fl)


@emulates(OpMap.ONE, (0xFE, 0xFF), (0, 1))
def inc_dec_rm(x: Exec, i: Insn) -> Steps:
    a = yield from x.rm_read(i.width, True)
    res, fl = (flags.dec if i.reg & 1 else flags.inc)(i.width, a, x.rflags)
    yield from x.rm_write(i.width, res)
    x.set_flags(fl)
