"""Compare-and-exchange and exchange-and-add: CMPXCHG, CMPXCHG8B, CMPXCHG16B, XADD.

These are the locked read-modify-writes of the ISA, and the CPU performs them as such with or without
LOCK: one read, then one write of the whole operand. When a compare fails, the write still happens and
stores back the value just read (the host CPU's hardware write watchpoints fire for it), so a device
sees the same read-then-write pair whatever the outcome.
"""

from __future__ import annotations

from vmmio.vmm.semantics.context import ALIGN_CHECK, RMW_READ, WRITE, Exec, Steps
from vmmio.vmm.semantics.registry import emulates
from vmmio.x86 import flags
from vmmio.x86.flags import AluOp
from vmmio.x86.insn import Insn, OpMap
from vmmio.x86.regs import MASK, ZF, Gpr

_CMP, _ADD = int(AluOp.CMP), int(AluOp.ADD)


@emulates(OpMap.M0F, (0xB0, 0xB1))
def cmpxchg(x: Exec, i: Insn) -> Steps:
    """Compare the accumulator with the destination: equal, store the source; else load the accumulator.

    A register destination whose compare fails is not written at all (its upper half survives a 32-bit
    CMPXCHG on the host CPU), while the accumulator is loaded with the usual zero-extension.
    """
    w = i.width
    dst = yield from x.rm_read(w, True)
    _, fl = flags.alu(_CMP, w, x.get(Gpr.RAX, w), dst, x.rflags)
    if fl & ZF:
        yield from x.rm_write(w, x.get(i.reg, w))
    else:
        if i.mem is not None:
            yield x.store(w, dst)
        x.set(Gpr.RAX, w, dst)
    x.set_flags(fl)


@emulates(OpMap.M0F, (0xC7,), (1,), mem_only=True)
def cmpxchg8b_16b(x: Exec, i: Insn) -> Steps:
    """CMPXCHG8B m64 (EDX:EAX against the operand, ECX:EBX stored) and, with REX.W, CMPXCHG16B m128.

    CMPXCHG16B needs a 16-byte aligned operand (#GP(0) before any access); other flags than ZF are kept.
    """
    half = 8 if i.opsize == 8 else 4
    x.require("cx16" if half == 8 else "cx8")
    mem = i.mem
    assert mem is not None
    ea = x.ea()
    if half == 8:
        yield (ALIGN_CHECK, mem.seg, ea, 16, 0)
    bits = 8 * half
    old = yield (RMW_READ, mem.seg, ea, 2 * half, 0)
    if old == x.get(Gpr.RDX, half) << bits | x.get(Gpr.RAX, half):
        yield (WRITE, mem.seg, ea, 2 * half, x.get(Gpr.RCX, half) << bits | x.get(Gpr.RBX, half))
        x.set_flags(x.rflags | ZF)
    else:
        yield (WRITE, mem.seg, ea, 2 * half, old)
        x.set(Gpr.RAX, half, old & MASK[half])
        x.set(Gpr.RDX, half, old >> bits)
        x.set_flags(x.rflags & ~ZF)


@emulates(OpMap.M0F, (0xC0, 0xC1))
def xadd(x: Exec, i: Insn) -> Steps:
    """Exchange and add: the source register gets the old destination, the destination the sum (which
    wins when both name the same register). The store goes to the address computed before the source
    register changes: that register may also address the operand."""
    w = i.width
    dst = yield from x.rm_read(w, True)
    res, fl = flags.alu(_ADD, w, dst, x.get(i.reg, w), x.rflags)
    if i.mem is None:
        x.set(i.reg, w, dst)
        x.set(i.rm, w, res)
    else:
        yield x.store(w, res)
        x.set(i.reg, w, dst)
    x.set_flags(fl)
