"""System instructions with a memory operand: SGDT/SIDT/LGDT/LIDT, SMSW/LMSW, SLDT/STR/LLDT/LTR, VERR/VERW.

Privilege: LGDT, LIDT, LLDT, LTR and LMSW are #GP(0) at CPL > 0 (virtual-8086 mode included); with
CR4.UMIP, SGDT, SIDT, SLDT, STR and SMSW are #GP(0) at CPL > 0 too. The 0F 00 group is #UD in real and
virtual-8086 mode. Descriptor-table operands are two accesses, the 16-bit limit then the base: 32 bits
(a 16-bit LGDT/LIDT uses 24 of them), or 64 in 64-bit mode (which LGDT/LIDT need canonical);
selector operands in memory are words whatever the operand size. LLDT and LTR read the GDT with implicit
supervisor reads (16-byte descriptors in IA-32e mode, whose upper type field must be 0 and base
canonical); LTR marks the TSS busy with a 1-byte implicit write of its access byte.
"""

from __future__ import annotations

from collections.abc import Generator

from vmmio.vmm.semantics.context import READ, SYS_READ, WRITE, Exec, Request, Steps
from vmmio.vmm.semantics.registry import emulates
from vmmio.vmm.semantics.segments import ia32e, protected, read_descriptor, set_accessed
from vmmio.vmm.semantics.stack import privilege
from vmmio.x86.descriptors import (
    DESC_TSS_BUSY,
    SYS_LDT,
    SYS_TSS,
    SYS_TSS16,
    canonical,
    check_system_load,
    descriptor_address,
    is_null,
    null_segment,
    system_segment,
    verify,
)
from vmmio.x86.faults import GP, UD, GuestFault
from vmmio.x86.insn import Insn, OpMap
from vmmio.x86.regs import MASK, ZF
from vmmio.x86.state import CR0_PE

CR4_UMIP = 1 << 11  # user-mode instruction prevention

# 0F 01 /0-/3: which descriptor-table register, and whether the instruction loads it.
_SGDT, _SIDT, _LGDT, _LIDT = 0, 1, 2, 3
_BUSY_BYTE_BIT = DESC_TSS_BUSY >> 8  # the busy bit within the access byte


def _privileged(x: Exec) -> None:
    if privilege(x):
        raise GuestFault(GP, 0)


def _umip(x: Exec) -> None:
    if x.ctl.cr4 & CR4_UMIP and privilege(x):
        raise GuestFault(GP, 0)


def _protected_only(x: Exec) -> None:
    """The 0F 00 group is not recognised in real-address or virtual-8086 mode."""
    if not protected(x):
        raise GuestFault(UD)


def _base_size(x: Exec) -> int:
    return 8 if x.mode == 64 else 4


@emulates(OpMap.M0F, (0x01,), (_SGDT, _SIDT), mem_only=True, mnemonics=("sgdt", "sidt"))
def store_table(x: Exec, i: Insn) -> Steps:
    _umip(x)
    base, limit = x.ctl.idtr if i.reg & 7 == _SIDT else x.ctl.gdtr
    mem = i.mem
    assert mem is not None
    ea = x.ea()
    yield (WRITE, mem.seg, ea, 2, limit)
    yield (WRITE, mem.seg, (ea + 2) & MASK[mem.addr_size], _base_size(x), base & MASK[_base_size(x)])


@emulates(OpMap.M0F, (0x01,), (_LGDT, _LIDT), mem_only=True, mnemonics=("lgdt", "lidt"))
def load_table(x: Exec, i: Insn) -> Steps:
    _privileged(x)
    mem = i.mem
    assert mem is not None
    ea = x.ea()
    limit = yield (READ, mem.seg, ea, 2, 0)
    base = yield (READ, mem.seg, (ea + 2) & MASK[mem.addr_size], _base_size(x), 0)
    if x.mode == 64:
        if not canonical(x.ctl, base):
            raise GuestFault(GP, 0)
    elif i.opsize == 2:
        base &= 0xFF_FFFF  # a 16-bit operand size loads a 24-bit base
    if i.reg & 7 == _LIDT:
        x.control().idtr = (base, limit)
    else:
        x.control().gdtr = (base, limit)


@emulates(OpMap.M0F, (0x01,), (4,), mem_only=True, mnemonics=("smsw",))
def smsw(x: Exec, i: Insn) -> Steps:
    _umip(x)
    yield x.store(2, x.ctl.cr0 & 0xFFFF)  # a word in memory at every operand size


@emulates(OpMap.M0F, (0x01,), (6,), mem_only=True, mnemonics=("lmsw",))
def lmsw(x: Exec, i: Insn) -> Steps:
    """CR0.MP, EM and TS from bits 1-3; PE from bit 0, which can set PE but never clear it."""
    _privileged(x)
    v = yield x.load(2)
    ctl = x.control()
    ctl.cr0 = (ctl.cr0 & ~0xF) | (v & 0xF) | (ctl.cr0 & CR0_PE)


@emulates(OpMap.M0F, (0x00,), (0, 1), mem_only=True, mnemonics=("sldt", "str"))
def store_system_selector(x: Exec, i: Insn) -> Steps:
    _protected_only(x)
    _umip(x)
    seg = x.ctl.tr if i.reg & 7 == 1 else x.ctl.ldtr
    yield x.store(2, seg.selector)


def _load_system(x: Exec, selector: int, types: tuple[int, ...], busy: bool) -> Steps:
    """LLDT/LTR's descriptor: in the GDT (#GP(selector) for TI = 1), of one of `types`, present,
    canonical base in IA-32e mode; LTR then marks it busy in memory and in TR."""
    if selector & 4:
        raise GuestFault(GP, selector & 0xFFFC)
    long_mode = ia32e(x)
    at, desc = yield from read_descriptor(x, selector, 16 if long_mode else 8)
    high = (yield from _high(at)) if long_mode else None
    check_system_load(selector, desc, types, high)
    seg = system_segment(selector, desc, high)
    if long_mode and not canonical(x.ctl, seg.base):
        raise GuestFault(GP, selector & 0xFFFC)
    if busy:
        yield from set_accessed(at, desc, _BUSY_BYTE_BIT)
        seg.type |= _BUSY_BYTE_BIT
        x.control().tr = seg
    else:
        x.control().ldtr = seg


def _high(at: int) -> Generator[Request, int, int]:
    """The upper 8 bytes of a 16-byte system descriptor (IA-32e mode)."""
    return (yield (SYS_READ, 0, at + 8, 8, 0))


@emulates(OpMap.M0F, (0x00,), (2,), mnemonics=("lldt",))
def lldt(x: Exec, i: Insn) -> Steps:
    _protected_only(x)
    _privileged(x)
    selector = x.get(i.rm, 2) if i.mem is None else (yield x.load(2))
    if is_null(selector):
        x.control().ldtr = null_segment(selector)  # an unusable LDTR
        return
    yield from _load_system(x, selector, (SYS_LDT,), busy=False)


@emulates(OpMap.M0F, (0x00,), (3,), mnemonics=("ltr",))
def ltr(x: Exec, i: Insn) -> Steps:
    _protected_only(x)
    _privileged(x)
    selector = x.get(i.rm, 2) if i.mem is None else (yield x.load(2))
    if is_null(selector):
        raise GuestFault(GP, 0)
    types = (SYS_TSS,) if ia32e(x) else (SYS_TSS16, SYS_TSS)  # available TSSs only
    yield from _load_system(x, selector, types, busy=True)


@emulates(OpMap.M0F, (0x00,), (4, 5), mnemonics=("verr", "verw"))
def verr_verw(x: Exec, i: Insn) -> Steps:
    """ZF = whether the segment is readable (VERR) or writable (VERW) at max(CPL, RPL); a selector
    outside its table (or null) gives ZF = 0, never a fault."""
    _protected_only(x)
    selector = x.get(i.rm, 2) if i.mem is None else (yield x.load(2))
    ok = False
    if not is_null(selector) and _in_table(x, selector):
        _at, desc = yield from read_descriptor(x, selector)
        ok = verify(x.ctl.cpl, selector, desc, write=i.reg & 7 == 5)
    x.set_flags((x.rflags & ~ZF) | (ZF if ok else 0))


def _in_table(x: Exec, selector: int) -> bool:
    try:
        descriptor_address(x.ctl, selector)
    except GuestFault:
        return False
    return True


__all__ = ["CR4_UMIP"]
