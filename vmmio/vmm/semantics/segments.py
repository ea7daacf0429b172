"""Segment registers: MOV to and from them, PUSH/POP Sreg, LDS/LES/LFS/LGS/LSS, and the segment load the
far transfers and system instructions share.

A descriptor is read with an implicit supervisor read (SYS_READ, 8 bytes at the linear address the
selector names: the GDT or LDT may be MMIO, or not mapped: #PF without the U bit) and its accessed bit
set with a 1-byte implicit write of the descriptor's access byte when it is clear, after every check
passed. The checks are `x86.descriptors`'. Segment caches change in the staged control state
(`Exec.control()`), committed with the instruction.

Not modelled: the interrupt shadow after MOV SS / POP SS (the backends have no way to hold one).
"""

from __future__ import annotations

from collections.abc import Generator

from vmmio.vmm.semantics.context import READ, SYS_READ, SYS_WRITE, WRITE, Exec, Request, Steps
from vmmio.vmm.semantics.registry import emulates
from vmmio.vmm.semantics.stack import pop
from vmmio.x86.descriptors import (
    ACCESS_BYTE,
    Descriptor,
    check_data_load,
    check_stack_load,
    descriptor_address,
    is_null,
    null_segment,
    real_mode_segment,
    vm86_segment,
)
from vmmio.x86.faults import GP, GuestFault
from vmmio.x86.insn import Insn, OpMap
from vmmio.x86.regs import MASK, VM, Gpr, Seg
from vmmio.x86.state import CR0_PE, EFER_LMA, Segment

_CS, _SS = int(Seg.CS), int(Seg.SS)
_RSP = int(Gpr.RSP)

DescriptorRead = Generator[Request, int, tuple[int, Descriptor]]


def read_descriptor(x: Exec, selector: int, size: int = 8) -> DescriptorRead:
    """(linear address, descriptor) of `selector`, #GP(selector) unless all `size` bytes (16 for a system
    descriptor in IA-32e mode) lie within the GDT/LDT; the low 8 bytes are read."""
    at = descriptor_address(x.ctl, selector, size=size)
    raw = yield (SYS_READ, 0, at, 8, 0)
    return at, Descriptor(raw)


def set_accessed(at: int, desc: Descriptor, bit: int = 1) -> Steps:
    """Set a bit of the descriptor's access byte (accessed: bit 0 of the type; TSS busy: bit 1) in memory
    when it is clear, as the CPU does when it loads the descriptor."""
    byte = desc.access_byte
    if not byte & bit:
        yield (SYS_WRITE, 0, at + ACCESS_BYTE, 1, byte | bit)


def loaded(desc: Descriptor, selector: int) -> Segment:
    """The cache a code/data descriptor loads (with the accessed bit, which the load sets)."""
    seg = desc.segment(selector)
    seg.type |= 1
    return seg


def protected(x: Exec) -> bool:
    """Protected mode proper (not real, not virtual-8086): selectors name descriptors."""
    return bool(x.ctl.cr0 & CR0_PE) and not x.rflags & VM


def ia32e(x: Exec) -> bool:
    return bool(x.ctl.efer & EFER_LMA)


def load_segment(x: Exec, reg: int, selector: int) -> Steps:
    """Load DS, ES, FS, GS or SS as MOV/POP/LxS do (SDM MOV's pseudo-code), into the staged control."""
    selector &= 0xFFFF
    ctl = x.ctl
    new: Segment
    if not ctl.cr0 & CR0_PE:
        new = real_mode_segment(selector, ctl.segs[reg])
    elif x.rflags & VM:
        new = vm86_segment(selector)
    elif reg == _SS:
        cpl = ctl.cpl
        if is_null(selector):
            # 64-bit mode lets CPL 0-2 load a null SS whose RPL is the CPL; nowhere else.
            if x.mode != 64 or cpl == 3 or selector & 3 != cpl:
                raise GuestFault(GP, 0)
            new = null_segment(selector, cpl)
        else:
            at, desc = yield from read_descriptor(x, selector)
            check_stack_load(cpl, selector, desc)
            yield from set_accessed(at, desc)
            new = loaded(desc, selector)
    elif is_null(selector):
        new = null_segment(selector)
    else:
        at, desc = yield from read_descriptor(x, selector)
        check_data_load(ctl.cpl, selector, desc)
        yield from set_accessed(at, desc)
        new = loaded(desc, selector)
    x.control().segs[reg] = new


@emulates(OpMap.ONE, (0x8E,))
def mov_to_sreg(x: Exec, i: Insn) -> Steps:
    """MOV Sreg, r/m16 (the register form too: its descriptor read may be what faulted). MOV CS is #UD
    (the decoder rejects it)."""
    selector = x.get(i.rm, 2) if i.mem is None else (yield x.load(2))
    yield from load_segment(x, i.reg & 7, selector)


@emulates(OpMap.ONE, (0x8C,), mem_only=True)
def mov_from_sreg(x: Exec, i: Insn) -> Steps:
    """MOV m16, Sreg: a word store whatever the operand size (the host CPU writes 2 bytes with 66h or
    REX.W too)."""
    yield x.store(2, x.ctl.segs[i.reg & 7].selector)


# PUSH/POP Sreg: the register is bits 5:3 of the opcode (06 ES, 0E CS, 16 SS, 1E DS; 0F A0 FS, 0F A8 GS).
def _sreg(i: Insn) -> int:
    return (i.opcode >> 3) & 7


@emulates(OpMap.ONE, (0x06, 0x0E, 0x16, 0x1E))
@emulates(OpMap.M0F, (0xA0, 0xA8))
def push_sreg(x: Exec, i: Insn) -> Steps:
    """The selector, zero-extended in 64-bit mode (8 bytes written, as the host CPU does); with a 32-bit
    operand size Intel CPUs write only the low word of the 4-byte slot (seen on the host, as the SDM says
    of recent Core processors); a 16-bit push writes the word."""
    w = i.width
    sp = (x.gprs[_RSP] - w) & MASK[x.stack_size]
    yield (WRITE, _SS, sp, 2 if w == 4 else w, x.ctl.segs[_sreg(i)].selector)
    x.set(_RSP, x.stack_size, sp)


@emulates(OpMap.ONE, (0x07, 0x17, 0x1F))
@emulates(OpMap.M0F, (0xA1, 0xA9))
def pop_sreg(x: Exec, i: Insn) -> Steps:
    """A word read at the stack pointer (the host CPU reads 2 bytes whatever the operand size), the stack
    pointer moved by the operand size, then the segment load."""
    selector = yield from pop(x, i.width, read=2)
    yield from load_segment(x, _sreg(i), selector)


# LES, LDS (outside 64-bit mode), LSS, LFS, LGS: the segment register each loads.
_FAR_LOADS = {(OpMap.ONE, 0xC4): int(Seg.ES), (OpMap.ONE, 0xC5): int(Seg.DS)}
_FAR_LOADS.update({(OpMap.M0F, 0xB2): _SS, (OpMap.M0F, 0xB4): int(Seg.FS), (OpMap.M0F, 0xB5): int(Seg.GS)})


def far_pointer(x: Exec, w: int) -> Generator[Request, int, tuple[int, int]]:
    """(offset, selector) of an m16:16/m16:32/m16:64 operand: the offset read, then the selector after
    it, two operand reads as the SDM's pseudo-code has them (and Linux's emulator makes them)."""
    mem = x.insn.mem
    assert mem is not None
    ea = x.ea()
    offset = yield (READ, mem.seg, ea, w, 0)
    selector = yield (READ, mem.seg, (ea + w) & MASK[mem.addr_size], 2, 0)
    return offset, selector


@emulates(OpMap.ONE, (0xC4, 0xC5), mem_only=True, mnemonics=("les", "lds"))
@emulates(OpMap.M0F, (0xB2, 0xB4, 0xB5), mem_only=True)
def load_far_pointer(x: Exec, i: Insn) -> Steps:
    w = i.width
    offset, selector = yield from far_pointer(x, w)
    yield from load_segment(x, _FAR_LOADS[i.opmap, i.opcode], selector)
    x.set(i.reg, w, offset)
