"""The stack: PUSH/POP of registers, immediates, memory and RFLAGS, ENTER and LEAVE.

Every stack access goes through SS at the decremented (push) or current (pop) stack pointer, at the
stack's width (SP, ESP or RSP: `Exec.stack_size`), so SS's limit (expand-up or down), its canonical
check in 64-bit mode and alignment checking raise #SS(0)/#AC(0) as the CPU does. Multi-word frames are
written push by push in program order, as the CPU does: on the host a fault on a later push of a far
CALL or ENTER leaves the earlier ones written (vmmio's kernel commits no RAM write of a faulting
instruction, but a device has seen the MMIO writes issued before the fault, as on the CPU).
"""

from __future__ import annotations

from vmmio.vmm.semantics.context import READ, TOUCH, WRITE, Exec, Operand, Steps
from vmmio.vmm.semantics.registry import emulates
from vmmio.x86.faults import GP, PFEC_W, GuestFault
from vmmio.x86.insn import Insn, OpMap
from vmmio.x86.regs import AC, DF, ID, IF, IOPL, MASK, NT, RF, STATUS_FLAGS, TF, VIF, VIP, VM, Gpr, Seg
from vmmio.x86.state import CR0_PE

_SS = int(Seg.SS)
_RSP, _RBP = int(Gpr.RSP), int(Gpr.RBP)

# RFLAGS bits software can write at all (bit 1 reads as 1; 3, 5, 15 and 22-63 read as 0).
_WRITABLE = STATUS_FLAGS | TF | IF | DF | IOPL | NT | RF | VM | AC | VIF | VIP | ID
_FIXED1 = 1 << 1


def push(x: Exec, w: int, value: int) -> Steps:
    """One push of `w` bytes: the write at the decremented stack pointer, then the pointer itself."""
    sp = (x.gprs[_RSP] - w) & MASK[x.stack_size]
    yield (WRITE, _SS, sp, w, value & MASK[w])
    x.set(_RSP, x.stack_size, sp)


def pop(x: Exec, w: int, read: int = 0) -> Operand:
    """One pop of `w` bytes (of which the first `read`, if given, are read: POP Sreg reads a word)."""
    sp = x.gprs[_RSP] & MASK[x.stack_size]
    value = yield (READ, _SS, sp, read or w, 0)
    x.set(_RSP, x.stack_size, sp + w)
    return value


def release(x: Exec, n: int) -> None:
    """Drop `n` more bytes off the stack (RET imm16)."""
    x.set(_RSP, x.stack_size, (x.gprs[_RSP] + n) & MASK[x.stack_size])


@emulates(OpMap.ONE, (0xFF,), (6,))
def push_rm(x: Exec, i: Insn) -> Steps:
    w = i.width
    v = x.get(i.rm, w) if i.mem is None else (yield x.load(w))
    yield from push(x, w, v)


@emulates(OpMap.ONE, (0x8F,), (0,))
def pop_rm(x: Exec, i: Insn) -> Steps:
    w = i.width
    v = yield from pop(x, w)
    # The destination address is computed with the already incremented stack pointer.
    if i.mem is None:
        x.set(i.rm, w, v)
    else:
        yield x.store(w, v)


@emulates(OpMap.ONE, range(0x50, 0x58))
def push_reg(x: Exec, i: Insn) -> Steps:
    # PUSH RSP pushes the value it had before the instruction.
    yield from push(x, i.width, x.get(i.reg, i.width))


@emulates(OpMap.ONE, range(0x58, 0x60))
def pop_reg(x: Exec, i: Insn) -> Steps:
    v = yield from pop(x, i.width)
    x.set(i.reg, i.width, v)  # after the increment: POP RSP loads the popped value


@emulates(OpMap.ONE, (0x68, 0x6A))
def push_imm(x: Exec, i: Insn) -> Steps:
    yield from push(x, i.width, i.imm)  # sign-extended to the operand size


def _vm86_iopl_check(x: Exec) -> None:
    """PUSHF/POPF/IRET in virtual-8086 mode need IOPL 3 (CR4.VME's virtual flags are not modelled)."""
    if x.rflags & VM and x.rflags & IOPL != IOPL:
        raise GuestFault(GP, 0)


@emulates(OpMap.ONE, (0x9C,))
def pushf(x: Exec, i: Insn) -> Steps:
    _vm86_iopl_check(x)
    yield from push(x, i.width, x.rflags & ~(VM | RF))  # the image has VM and RF clear


def privilege(x: Exec) -> int:
    """The CPL: 0 in real mode, 3 in virtual-8086 mode."""
    if x.rflags & VM:
        return 3
    return x.ctl.cpl if x.ctl.cr0 & CR0_PE else 0


def popf_mask(x: Exec, w: int) -> int:
    """The RFLAGS bits POPF (and IRET to the same level) may change, by mode, CPL, IOPL and size.

    Real mode and CPL 0 change everything but VIP, VIF and VM (RF is cleared); CPL > 0 leaves IOPL, and
    CPL > IOPL also IF; virtual-8086 mode (IOPL 3) leaves IOPL. A 16-bit pop changes bits 15:0 only.
    """
    mask = _WRITABLE & ~(VIP | VIF | VM)
    cpl = privilege(x)
    if cpl:
        mask &= ~IOPL
        if cpl > (x.rflags & IOPL) >> 12:
            mask &= ~IF
    return mask & 0xFFFF if w == 2 else mask


def load_flags(x: Exec, image: int, mask: int) -> None:
    """RFLAGS from a popped image: the bits in `mask`, the rest kept; RF cleared as after any POPF."""
    x.set_flags(((x.rflags & ~mask) | (image & mask) | _FIXED1) & ~RF)


@emulates(OpMap.ONE, (0x9D,))
def popf(x: Exec, i: Insn) -> Steps:
    _vm86_iopl_check(x)
    w = i.width
    image = yield from pop(x, w)
    load_flags(x, image, popf_mask(x, w))


@emulates(OpMap.ONE, (0xC8,))
def enter(x: Exec, i: Insn) -> Steps:
    """ENTER imm16, imm8: push rBP, copy nesting-level-1 frame pointers from the old frame (each read at
    rBP - k*size through SS, then pushed), push the new frame pointer, then allocate imm16 bytes, whose
    new top must be writable."""
    w = i.width
    size = x.stack_size
    alloc = i.imm & 0xFFFF
    level = i.raw[-1] & 31
    yield from push(x, w, x.get(_RBP, w))
    frame = x.gprs[_RSP]
    if level:
        bp = x.gprs[_RBP]
        for k in range(1, level):
            v = yield (READ, _SS, (bp - k * w) & MASK[size], w, 0)
            yield from push(x, w, v)
        yield from push(x, w, frame)
    x.set(_RBP, w, frame)
    final = (x.gprs[_RSP] - alloc) & MASK[size]
    # A write at the final stack pointer must be possible (SDM: #SS/#PF for it); the host CPU checks it
    # after the pushes, which it has then made.
    yield (TOUCH, _SS, final, 1, PFEC_W)
    x.set(_RSP, size, final)


@emulates(OpMap.ONE, (0xC9,))
def leave(x: Exec, i: Insn) -> Steps:
    """LEAVE: rSP <- rBP (at the stack's width), then pop rBP (at the operand size)."""
    x.set(_RSP, x.stack_size, x.gprs[_RBP])
    v = yield from pop(x, i.width)
    x.set(_RBP, i.width, v)
