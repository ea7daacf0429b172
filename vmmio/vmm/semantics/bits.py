"""Bit tests with a memory operand: BT, BTS, BTR, BTC (register and immediate bit offsets)."""

from __future__ import annotations

from vmmio.vmm.semantics.context import READ, RMW_READ, WRITE, Exec, Steps
from vmmio.vmm.semantics.registry import emulates
from vmmio.x86 import flags
from vmmio.x86.insn import Insn, OpMap
from vmmio.x86.regs import MASK, SIGN

# What each instruction does to the selected bit, numbered as ModRM.reg of 0F BA.
BT, BTS, BTR, BTC = 4, 5, 6, 7
_BIT_OP = {0xA3: BT, 0xAB: BTS, 0xB3: BTR, 0xBB: BTC}  # the register-offset forms, in that numbering


def _apply(op: int, value: int, bit: int) -> int:
    if op == BTS:
        return value | (1 << bit)
    if op == BTR:
        return value & ~(1 << bit)
    return value ^ (1 << bit)


def _bit_op(x: Exec, i: Insn, op: int, offset: int, from_register: bool) -> Steps:
    w = i.width
    bits = w * 8
    if i.mem is None:
        bit = offset & (bits - 1)
        value = x.get(i.rm, w)
        if op != BT:
            x.set(i.rm, w, _apply(op, value, bit))
    else:
        mem = i.mem
        ea = x.ea()
        if from_register:
            # A register bit offset is signed and may select a bit outside the addressed operand.
            signed = offset - (SIGN[w] << 1) if offset & SIGN[w] else offset
            ea = (ea + (signed >> (bits.bit_length() - 1)) * w) & MASK[mem.addr_size]
        bit = offset & (bits - 1)
        value = yield (READ if op == BT else RMW_READ, mem.seg, ea, w, 0)
        if op != BT:
            yield (WRITE, mem.seg, ea, w, _apply(op, value, bit))
    x.set_flags(flags.bt_flags(x.rflags, value >> bit))


@emulates(OpMap.M0F, (0xA3, 0xAB, 0xB3, 0xBB))
def bit_reg(x: Exec, i: Insn) -> Steps:
    yield from _bit_op(x, i, _BIT_OP[i.opcode], x.get(i.reg, i.width), True)


@emulates(OpMap.M0F, (0xBA,), (BT, BTS, BTR, BTC))
def bit_imm(x: Exec, i: Insn) -> Steps:
    yield from _bit_op(x, i, i.reg & 7, i.imm & 0xFF, False)
