"""Data moves: MOV, MOVZX, MOVSX, MOVSXD, XCHG with a memory operand."""

from __future__ import annotations

from vmmio.vmm.semantics.context import Exec, Steps
from vmmio.vmm.semantics.registry import emulates
from vmmio.x86.insn import Insn, OpMap
from vmmio.x86.regs import SIGN, Gpr


def _sext(value: int, width: int) -> int:
    return value - (SIGN[width] << 1) if value & SIGN[width] else value


@emulates(OpMap.ONE, (0x88, 0x89))
def mov_store(x: Exec, i: Insn) -> Steps:
    w = 1 if i.opcode == 0x88 else i.opsize
    v = x.get(i.reg, w)
    if i.mem is None:
        x.set(i.rm, w, v)
    else:
        yield x.store(w, v)


@emulates(OpMap.ONE, (0x8A, 0x8B))
def mov_load(x: Exec, i: Insn) -> Steps:
    w = 1 if i.opcode == 0x8A else i.opsize
    v = x.get(i.rm, w) if i.mem is None else (yield x.load(w))
    x.set(i.reg, w, v)


@emulates(OpMap.ONE, (0xC6, 0xC7), (0,))
def mov_store_imm(x: Exec, i: Insn) -> Steps:
    w = 1 if i.opcode == 0xC6 else i.opsize
    if i.mem is None:
        x.set(i.rm, w, i.imm)
    else:
        yield x.store(w, i.imm)


@emulates(OpMap.ONE, (0xA0, 0xA1))
def mov_load_moffs(x: Exec, i: Insn) -> Steps:
    w = 1 if i.opcode == 0xA0 else i.opsize
    x.set(Gpr.RAX, w, (yield x.load(w)))


@emulates(OpMap.ONE, (0xA2, 0xA3))
def mov_store_moffs(x: Exec, i: Insn) -> Steps:
    w = 1 if i.opcode == 0xA2 else i.opsize
    yield x.store(w, x.get(Gpr.RAX, w))


@emulates(OpMap.M0F, (0xB6, 0xB7, 0xBE, 0xBF))
def movzx_movsx(x: Exec, i: Insn) -> Steps:
    src = 1 if i.opcode & 1 == 0 else 2
    v = x.get(i.rm, src) if i.mem is None else (yield x.load(src))
    if i.opcode >= 0xBE:
        v = _sext(v, src)
    x.set(i.reg, i.opsize, v)


@emulates(OpMap.ONE, (0x63,), mnemonics=("movsxd",))
def movsxd(x: Exec, i: Insn) -> Steps:
    # The source is a dword at every operand size: the SDM's "MOVSXD r16, r/m16" notwithstanding, the
    # host CPU (it faults on the third byte), QEMU and KVM all read 4 bytes, and the device sees that.
    v = x.get(i.rm, 4) if i.mem is None else (yield x.load(4))
    x.set(i.reg, i.opsize, _sext(v, 4))


@emulates(OpMap.ONE, (0x86, 0x87))
def xchg(x: Exec, i: Insn) -> Steps:
    w = 1 if i.opcode == 0x86 else i.opsize
    v = x.get(i.reg, w)
    if i.mem is None:
        old = x.get(i.rm, w)
        x.set(i.rm, w, v)
    else:
        old = yield x.load_for_update(w)
        yield x.store(w, v)
    x.set(i.reg, w, old)
