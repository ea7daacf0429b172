"""Shifts and rotates with a memory or register operand: group 2 (ROL ROR RCL RCR SHL SHR SAL SAR by 1,
by CL or by imm8) and the double shifts SHLD/SHRD.

The operand is read (checked for write) and written back even when the masked count is 0 and nothing
changes: the host CPU's hardware write watchpoints fire for such a shift, so the device sees the write
too (tests/test_forms_integer.py has the watchpoint test). The count and flag rules are in
`vmmio.x86.flags.shift` and `double_shift`.
"""

from __future__ import annotations

from vmmio.vmm.semantics.context import Exec, Steps
from vmmio.vmm.semantics.registry import emulates
from vmmio.x86 import flags
from vmmio.x86.insn import Insn, OpMap
from vmmio.x86.regs import Gpr

_BY_ONE = (0xD0, 0xD1)
_BY_CL = (0xD2, 0xD3)


def _count(x: Exec, i: Insn) -> int:
    if i.opcode in _BY_ONE:
        return 1
    return x.get(Gpr.RCX, 1) if i.opcode in _BY_CL else i.imm & 0xFF


@emulates(OpMap.ONE, (0xC0, 0xC1, *_BY_ONE, *_BY_CL))
def shift_rotate(x: Exec, i: Insn) -> Steps:
    w = i.width
    a = yield from x.rm_read(w, True)
    res, fl = flags.shift(i.reg & 7, w, a, _count(x, i), x.rflags)
    yield from x.rm_write(w, res)
    x.set_flags(fl)


_SHLD_IMM, _SHLD_CL, _SHRD_IMM, _SHRD_CL = 0xA4, 0xA5, 0xAC, 0xAD


@emulates(OpMap.M0F, (_SHLD_IMM, _SHLD_CL, _SHRD_IMM, _SHRD_CL))
def double_shift(x: Exec, i: Insn) -> Steps:
    w = i.width
    count = x.get(Gpr.RCX, 1) if i.opcode & 1 else i.imm & 0xFF
    a = yield from x.rm_read(w, True)
    res, fl = flags.double_shift(i.opcode < _SHRD_IMM, w, a, x.get(i.reg, w), count, x.rflags)
    yield from x.rm_write(w, res)
    x.set_flags(fl)
