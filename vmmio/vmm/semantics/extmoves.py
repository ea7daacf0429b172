"""Moves added by ISA extensions: MOVBE (0F 38 F0/F1, byte-swapping load and store, CPUID movbe) and
MOVNTI (0F C3, a store with a non-temporal hint, SSE2). Both exist only with a memory operand (the
register form of MOVBE is #UD, which the decoder raises)."""

from __future__ import annotations

from vmmio.vmm.semantics.context import Exec, Steps
from vmmio.vmm.semantics.registry import emulates
from vmmio.x86.insn import Insn, OpMap


def _swap(value: int, width: int) -> int:
    return int.from_bytes(value.to_bytes(width, "little"), "big")


@emulates(OpMap.M0F38, (0xF0,), mem_only=True, mnemonics=("movbe",))
def movbe_load(x: Exec, i: Insn) -> Steps:
    x.require("movbe")
    x.set(i.reg, i.width, _swap((yield x.load(i.width)), i.width))


@emulates(OpMap.M0F38, (0xF1,), mem_only=True, mnemonics=("movbe",))
def movbe_store(x: Exec, i: Insn) -> Steps:
    x.require("movbe")
    yield x.store(i.width, _swap(x.get(i.reg, i.width), i.width))


@emulates(OpMap.M0F, (0xC3,), mem_only=True)
def movnti(x: Exec, i: Insn) -> Steps:
    x.require("sse2")
    yield x.store(i.width, x.get(i.reg, i.width))
