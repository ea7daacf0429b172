"""Conditional byte set and conditional move: SETcc (0F 90-9F) and CMOVcc (0F 40-4F).

CMOVcc reads its source whatever the condition (a false condition still makes the device read), and a
32-bit CMOVcc writes its destination either way, so a false condition in 64-bit mode still clears the
upper half (checked on the host CPU). SETcc only writes.
"""

from __future__ import annotations

from vmmio.vmm.semantics.context import Exec, Steps
from vmmio.vmm.semantics.registry import emulates
from vmmio.x86 import flags
from vmmio.x86.insn import Insn, OpMap


@emulates(OpMap.M0F, range(0x90, 0xA0))
def setcc(x: Exec, i: Insn) -> Steps:
    yield from x.rm_write(1, int(flags.condition(i.opcode & 0xF, x.rflags)))


@emulates(OpMap.M0F, range(0x40, 0x50))
def cmovcc(x: Exec, i: Insn) -> Steps:
    x.require("cmov")
    w = i.width
    v = yield from x.rm_read(w)
    if not flags.condition(i.opcode & 0xF, x.rflags):
        v = x.get(i.reg, w)
        if w != 4:
            return
    x.set(i.reg, w, v)
