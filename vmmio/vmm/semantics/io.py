"""IN and OUT with immediate or DX port numbers (INS/OUTS are string instructions)."""

from __future__ import annotations

from vmmio.vmm.semantics.context import PORT_CHECK, PORT_IN, PORT_OUT, Exec, Steps
from vmmio.vmm.semantics.registry import emulates
from vmmio.x86.insn import Insn, OpMap
from vmmio.x86.regs import Gpr

_PORT_IN_DX = 0xEC  # EC-EF take the port from DX; E4-E7 from an imm8


def _port_and_width(x: Exec, i: Insn) -> tuple[int, int]:
    port = i.imm & 0xFF if i.opcode < _PORT_IN_DX else x.get(Gpr.RDX, 2)
    return port, i.width


@emulates(OpMap.ONE, (0xE4, 0xE5, 0xEC, 0xED), port=True)
def port_in(x: Exec, i: Insn) -> Steps:
    port, w = _port_and_width(x, i)
    yield (PORT_CHECK, port, 0, w, 0)
    x.set(Gpr.RAX, w, (yield (PORT_IN, port, 0, w, 0)))


@emulates(OpMap.ONE, (0xE6, 0xE7, 0xEE, 0xEF), port=True)
def port_out(x: Exec, i: Insn) -> Steps:
    port, w = _port_and_width(x, i)
    yield (PORT_CHECK, port, 0, w, 0)
    yield (PORT_OUT, port, 0, w, x.get(Gpr.RAX, w))
