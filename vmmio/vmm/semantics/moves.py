"""Data moves: MOV, MOVZX, MOVSX, MOVSXD, XCHG with a memory operand."""

from __future__ import annotations

from vmmio.vmm.semantics.context import Direct, Exec, Steps
from vmmio.vmm.semantics.registry import emulates
from vmmio.x86.insn import Insn, OpMap
from vmmio.x86.regs import SIGN, Gpr

_MOVSX = 0xBE  # 0F BE/BF sign-extend; 0F B6/B7 zero-extend
_WORD_SOURCE = 1  # opcode bit of 0F B6-BF: a word source (else a byte)


def _sext(value: int, width: int) -> int:
    return value - (SIGN[width] << 1) if value & SIGN[width] else value


@emulates(OpMap.ONE, (0x88, 0x89), direct=Direct(load=False))
def mov_store(x: Exec, i: Insn) -> Steps:
    yield from x.rm_write(i.width, x.get(i.reg, i.width))


@emulates(OpMap.ONE, (0x8A, 0x8B), direct=Direct(load=True))
def mov_load(x: Exec, i: Insn) -> Steps:
    x.set(i.reg, i.width, (yield from x.rm_read(i.width)))


@emulates(OpMap.ONE, (0xC6, 0xC7), (0,), direct=Direct(load=False, imm=True))
def mov_store_imm(x: Exec, i: Insn) -> Steps:
    yield from x.rm_write(i.width, i.imm)


@emulates(OpMap.ONE, (0xA0, 0xA1), direct=Direct(load=True, rax=True))
def mov_load_moffs(x: Exec, i: Insn) -> Steps:
    x.set(Gpr.RAX, i.width, (yield x.load(i.width)))


@emulates(OpMap.ONE, (0xA2, 0xA3), direct=Direct(load=False, rax=True))
def mov_store_moffs(x: Exec, i: Insn) -> Steps:
    yield x.store(i.width, x.get(Gpr.RAX, i.width))


@emulates(OpMap.M0F, (0xB6,), direct=Direct(load=True, source=1))
@emulates(OpMap.M0F, (0xB7,), direct=Direct(load=True, source=2))
@emulates(OpMap.M0F, (0xBE,), direct=Direct(load=True, source=1, signed=True))
@emulates(OpMap.M0F, (0xBF,), direct=Direct(load=True, source=2, signed=True))
def movzx_movsx(x: Exec, i: Insn) -> Steps:
    src = 2 if i.opcode & _WORD_SOURCE else 1
    v = yield from x.rm_read(src)
    x.set(i.reg, i.width, _sext(v, src) if i.opcode >= _MOVSX else v)


@emulates(OpMap.ONE, (0x63,), mnemonics=("movsxd",), direct=Direct(load=True, source=4, signed=True))
def movsxd(x: Exec, i: Insn) -> Steps:
    # The source is a dword at every operand size: the SDM's "MOVSXD r16, r/m16" notwithstanding, the
    # host CPU (it faults on the third byte), QEMU and KVM all read 4 bytes, and the device sees that.
    v = yield from x.rm_read(4)
    x.set(i.reg, i.width, _sext(v, 4))


@emulates(OpMap.ONE, (0x86, 0x87))
def xchg(x: Exec, i: Insn) -> Steps:
    v = x.get(i.reg, i.width)
    old = yield from x.rm_read(i.width, True)
    yield from x.rm_write(i.width, v)
    x.set(i.reg, i.width, old)
