"""PUSH and POP with a memory operand: one access on the operand, one on the stack."""

from __future__ import annotations

from vmmio.vmm.semantics.context import READ, WRITE, Exec, Steps
from vmmio.vmm.semantics.registry import emulates
from vmmio.x86.insn import Insn, OpMap
from vmmio.x86.regs import MASK, Gpr, Seg

_SS = int(Seg.SS)


@emulates(OpMap.ONE, (0xFF,), (6,))
def push_rm(x: Exec, i: Insn) -> Steps:
    w = i.width
    v = x.get(i.rm, w) if i.mem is None else (yield x.load(w))
    sp = (x.gprs[Gpr.RSP] - w) & MASK[x.stack_size]
    yield (WRITE, _SS, sp, w, v)
    x.set(Gpr.RSP, x.stack_size, sp)


@emulates(OpMap.ONE, (0x8F,), (0,))
def pop_rm(x: Exec, i: Insn) -> Steps:
    w = i.width
    sp = x.gprs[Gpr.RSP] & MASK[x.stack_size]
    v = yield (READ, _SS, sp, w, 0)
    # The destination address is computed with the already incremented stack pointer.
    x.set(Gpr.RSP, x.stack_size, sp + w)
    if i.mem is None:
        x.set(i.rm, w, v)
    else:
        yield x.store(w, v)
