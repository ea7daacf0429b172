"""Group 15 cache-line operations: translated and checked like a read, no data moved."""

from __future__ import annotations

from vmmio.vmm.semantics.context import TOUCH, Exec, Steps
from vmmio.vmm.semantics.registry import emulates
from vmmio.x86.insn import Insn, OpMap


@emulates(OpMap.M0F, (0xAE,), (6, 7), mem_only=True, mnemonics=("clflush", "clflushopt", "clwb"))
def flush_line(x: Exec, i: Insn) -> Steps:
    mem = i.mem
    assert mem is not None
    yield (TOUCH, mem.seg, x.ea(), 1, 0)
