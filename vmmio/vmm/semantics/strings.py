"""String instructions, one iteration per call; the Vcpu applies REP generically."""

from __future__ import annotations

from vmmio.vmm.semantics.context import PORT_CHECK, PORT_IN, PORT_OUT, READ, WRITE, Exec, Steps
from vmmio.vmm.semantics.registry import emulates
from vmmio.x86 import flags
from vmmio.x86.flags import AluOp
from vmmio.x86.insn import Insn, OpMap
from vmmio.x86.regs import DF, Gpr, Seg

_ES, _DS, _FS = int(Seg.ES), int(Seg.DS), int(Seg.FS)
_CMP = int(AluOp.CMP)


def _source_seg(i: Insn) -> int:
    """DS unless overridden (in 64-bit mode only FS/GS overrides count); ES:rDI cannot be overridden."""
    seg = i.seg_override
    if seg < 0 or (i.mode == 64 and seg < _FS):
        return _DS
    return seg


def _step(x: Exec, reg: int, w: int) -> None:
    """Move rSI or rDI by one element, backwards when DF is set, at the address size."""
    delta = -w if x.rflags & DF else w
    x.set(reg, x.addr_size, x.gprs[reg] + delta)


def _addr(x: Exec, reg: int) -> int:
    return x.get(reg, x.addr_size)


@emulates(OpMap.ONE, (0xA4, 0xA5), string=True, zero_count_clears=(Gpr.RSI, Gpr.RDI))
def movs(x: Exec, i: Insn) -> Steps:
    w = i.width
    v = yield (READ, _source_seg(i), _addr(x, Gpr.RSI), w, 0)
    yield (WRITE, _ES, _addr(x, Gpr.RDI), w, v)
    _step(x, Gpr.RSI, w)
    _step(x, Gpr.RDI, w)


@emulates(OpMap.ONE, (0xAA, 0xAB), string=True, zero_count_clears=(Gpr.RDI,))
def stos(x: Exec, i: Insn) -> Steps:
    w = i.width
    yield (WRITE, _ES, _addr(x, Gpr.RDI), w, x.get(Gpr.RAX, w))
    _step(x, Gpr.RDI, w)


@emulates(OpMap.ONE, (0xAC, 0xAD), string=True)
def lods(x: Exec, i: Insn) -> Steps:
    w = i.width
    x.set(Gpr.RAX, w, (yield (READ, _source_seg(i), _addr(x, Gpr.RSI), w, 0)))
    _step(x, Gpr.RSI, w)


@emulates(OpMap.ONE, (0xA6, 0xA7), string=True, rep_zf=True)
def cmps(x: Exec, i: Insn) -> Steps:
    w = i.width
    a = yield (READ, _source_seg(i), _addr(x, Gpr.RSI), w, 0)
    b = yield (READ, _ES, _addr(x, Gpr.RDI), w, 0)
    x.set_flags(flags.alu(_CMP, w, a, b, x.rflags)[1])
    _step(x, Gpr.RSI, w)
    _step(x, Gpr.RDI, w)


@emulates(OpMap.ONE, (0xAE, 0xAF), string=True, rep_zf=True)
def scas(x: Exec, i: Insn) -> Steps:
    w = i.width
    b = yield (READ, _ES, _addr(x, Gpr.RDI), w, 0)
    x.set_flags(flags.alu(_CMP, w, x.get(Gpr.RAX, w), b, x.rflags)[1])
    _step(x, Gpr.RDI, w)


@emulates(OpMap.ONE, (0x6C, 0x6D), string=True, port=True)
def ins(x: Exec, i: Insn) -> Steps:
    w = i.width
    port = x.get(Gpr.RDX, 2)
    yield (PORT_CHECK, port, 0, w, 0)
    v = yield (PORT_IN, port, 0, w, 0)
    yield (WRITE, _ES, _addr(x, Gpr.RDI), w, v)
    _step(x, Gpr.RDI, w)


@emulates(OpMap.ONE, (0x6E, 0x6F), string=True, port=True)
def outs(x: Exec, i: Insn) -> Steps:
    w = i.width
    port = x.get(Gpr.RDX, 2)
    yield (PORT_CHECK, port, 0, w, 0)
    v = yield (READ, _source_seg(i), _addr(x, Gpr.RSI), w, 0)
    yield (PORT_OUT, port, 0, w, v)
    _step(x, Gpr.RSI, w)
