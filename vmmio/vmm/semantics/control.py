"""Control transfers that touch memory: near and far CALL, JMP through memory, RET, IRET.

Near branches in 64-bit mode have a 64-bit operand size whatever 66h says (Intel; the decoder forces
it). A target outside CS's limit is #GP(0) before anything is pushed (SDM); a non-canonical target in
64-bit mode is #GP(0) after the return address was pushed (the host CPU stores it, then faults).

Far transfers in protected mode go straight to code segments (conforming or not, any mode IA-32e
allows), RET/IRET to the same or an outer privilege level (SS:rSP popped, data segment registers the
new CPL may not use nulled). Not emulated (INST_EMUL, NOT_EMULATED): far CALL/JMP through call gates
and task gates or to a TSS (task switches), IRET with NT set outside IA-32e mode (task return), IRET
from CPL 0 to virtual-8086 mode, and PUSHF/POPF/IRET's CR4.VME virtual-interrupt rules in virtual-8086
mode. Far pointers and frames are read before the descriptor, so such an exit may follow device reads.
"""

from __future__ import annotations

from vmmio.abi import InstEmulReason
from vmmio.vmm.abort import EmulationAbort
from vmmio.vmm.semantics.context import Exec, Steps
from vmmio.vmm.semantics.registry import emulates
from vmmio.vmm.semantics.segments import (
    far_pointer,
    ia32e,
    loaded,
    protected,
    read_descriptor,
    set_accessed,
)
from vmmio.vmm.semantics.stack import pop, push, release
from vmmio.x86.descriptors import (
    SYS_CALL_GATE,
    SYS_CALL_GATE16,
    SYS_TASK_GATE,
    SYS_TSS,
    SYS_TSS16,
    canonical,
    check_code_target,
    check_return_code,
    check_stack_load,
    is_null,
    null_segment,
    real_mode_segment,
    vm86_segment,
)
from vmmio.x86.faults import GP, GuestFault
from vmmio.x86.insn import Insn, OpMap
from vmmio.x86.regs import AC, DF, ID, IF, IOPL, MASK, NT, RF, STATUS_FLAGS, TF, VIF, VIP, VM, Gpr, Seg
from vmmio.x86.state import Segment

_CS, _SS = int(Seg.CS), int(Seg.SS)
_DATA_SEGS = (int(Seg.ES), int(Seg.DS), int(Seg.FS), int(Seg.GS))
_RSP = int(Gpr.RSP)
_CR4_VME = 1 << 0  # virtual-8086 mode extensions
# System descriptors a far CALL/JMP may name that mean a call gate or a task switch.
_GATES_AND_TASKS = frozenset((SYS_CALL_GATE16, SYS_CALL_GATE, SYS_TASK_GATE, SYS_TSS16, SYS_TSS))


def _check_target(x: Exec, cs: Segment, offset: int, code64: bool) -> None:
    """#GP(0) for a target outside CS's limit, or (64-bit code) not canonical."""
    if (not canonical(x.ctl, offset)) if code64 else offset > cs.limit:
        raise GuestFault(GP, 0)


def _leave_64bit_mode(x: Exec, code64: bool) -> None:
    """A far transfer from 64-bit code into compatibility mode clears RSP[63:32]. The SDM leaves the
    upper halves undefined after such a switch; the host CPU (Intel) clears RSP's and keeps the other
    registers' (64-bit -> compatibility -> 64-bit with nothing in between shows it)."""
    if x.mode == 64 and not code64:
        x.set(_RSP, 4, x.gprs[_RSP])


# -- near ----------------------------------------------------------------------------------------


def _near(x: Exec, target: int, push_return: bool) -> Steps:
    w = x.insn.width
    target &= MASK[w]
    code64 = x.mode == 64
    if not code64:
        _check_target(x, x.ctl.segs[_CS], target, False)
    if push_return:
        yield from push(x, w, x.next_rip)
    if code64:
        _check_target(x, x.ctl.segs[_CS], target, True)
    x.next_rip = target


@emulates(OpMap.ONE, (0xE8,))
def call_rel(x: Exec, i: Insn) -> Steps:
    yield from _near(x, x.next_rip + i.imm, True)


@emulates(OpMap.ONE, (0xFF,), (2,))
def call_indirect(x: Exec, i: Insn) -> Steps:
    target = yield from x.rm_read(i.width)
    yield from _near(x, target, True)


@emulates(OpMap.ONE, (0xFF,), (4,))
def jmp_indirect(x: Exec, i: Insn) -> Steps:
    target = yield from x.rm_read(i.width)
    yield from _near(x, target, False)


@emulates(OpMap.ONE, (0xC2, 0xC3))
def ret_near(x: Exec, i: Insn) -> Steps:
    target = yield from pop(x, i.width)
    _check_target(x, x.ctl.segs[_CS], target, x.mode == 64)
    if i.opcode == 0xC2:
        release(x, i.imm & 0xFFFF)
    x.next_rip = target


# -- far CALL and JMP ------------------------------------------------------------------------------


def _unprotected_cs(x: Exec, selector: int) -> Segment:
    """CS as a real-mode or virtual-8086 far transfer loads it."""
    if x.rflags & VM:
        return vm86_segment(selector, code=True)
    return real_mode_segment(selector, x.ctl.segs[_CS])


def _far(x: Exec, i: Insn, call: bool) -> Steps:
    w = i.width
    if i.mem is None:  # 9A/EA ptr16:16/ptr16:32: the selector is the last two bytes
        offset, selector = i.imm & MASK[w], int.from_bytes(i.raw[-2:], "little")
    else:
        offset, selector = yield from far_pointer(x, w)
    ctl = x.ctl
    old_cs = ctl.segs[_CS].selector
    if not protected(x):
        cs = _unprotected_cs(x, selector)
        _check_target(x, cs, offset, False)
        if call:
            yield from push(x, w, old_cs)
            yield from push(x, w, x.next_rip)
        x.control().segs[_CS] = cs
        x.next_rip = offset
        return
    if is_null(selector):
        raise GuestFault(GP, 0)
    at, desc = yield from read_descriptor(x, selector)
    if not desc.s and desc.type in _GATES_AND_TASKS:
        raise EmulationAbort(InstEmulReason.NOT_EMULATED, "far CALL/JMP through a gate or to a task")
    cpl = ctl.cpl
    check_code_target(cpl, selector, desc, ia32e(x))
    cs = loaded(desc, (selector & ~3) | cpl)
    code64 = ia32e(x) and desc.long
    if not code64:
        offset &= 0xFFFF_FFFF  # a far pointer's 64-bit offset into compatibility-mode code
    _check_target(x, cs, offset, code64)
    if call:
        yield from push(x, w, old_cs)  # zero-extended to the operand size (the host writes all of it)
        yield from push(x, w, x.next_rip)
    yield from set_accessed(at, desc)
    x.control().segs[_CS] = cs
    _leave_64bit_mode(x, code64)
    x.next_rip = offset


@emulates(OpMap.ONE, (0x9A,))
@emulates(OpMap.ONE, (0xFF,), (3,))
def call_far(x: Exec, i: Insn) -> Steps:
    yield from _far(x, i, True)


@emulates(OpMap.ONE, (0xEA,))
@emulates(OpMap.ONE, (0xFF,), (5,))
def jmp_far(x: Exec, i: Insn) -> Steps:
    yield from _far(x, i, False)


# -- RET far and IRET ---------------------------------------------------------------------------------


def _outer_stack(x: Exec, selector: int, cpl: int, code64: bool) -> Steps:
    """The SS a return to privilege level `cpl` loads (null only into 64-bit code below CPL 3)."""
    ctl = x.control()
    if is_null(selector):
        if not code64 or cpl == 3:
            raise GuestFault(GP, 0)
        ctl.segs[_SS] = null_segment(selector, cpl)
        return
    at, desc = yield from read_descriptor(x, selector)
    check_stack_load(cpl, selector, desc)
    yield from set_accessed(at, desc)
    ctl.segs[_SS] = loaded(desc, selector)


def _null_inaccessible(x: Exec, cpl: int) -> None:
    """After a return to an outer level: ES, DS, FS, GS holding data or non-conforming code the new CPL
    may not use become null (their base is kept)."""
    segs = x.control().segs
    for n in _DATA_SEGS:
        seg = segs[n]
        conforming_code = seg.s and seg.type & 0xC == 0xC
        if not seg.unusable and not conforming_code and seg.dpl < cpl:
            segs[n] = Segment(0, seg.base, seg.limit, seg.type, seg.s, seg.dpl, False, unusable=True)


def _protected_return(
    x: Exec, w: int, offset: int, selector: int, release_bytes: int, image: int | None
) -> Steps:
    """RET far / IRET in protected mode once rIP, CS (and the RFLAGS image) are popped: the checks of
    the new CS, SS:rSP popped for an outer level (always for IRET from 64-bit mode), the loads."""
    ctl = x.ctl
    lma = ia32e(x)
    if is_null(selector):
        raise GuestFault(GP, 0)
    at, desc = yield from read_descriptor(x, selector)
    cpl = ctl.cpl
    new_cpl = check_return_code(cpl, selector, desc, lma)
    code64 = lma and desc.long
    outer = new_cpl > cpl
    new_sp = -1
    if outer or (image is not None and x.mode == 64):
        release(x, release_bytes)
        new_sp = yield from pop(x, w)
        ss_selector = (yield from pop(x, w)) & 0xFFFF
        yield from _outer_stack(x, ss_selector, new_cpl, code64)
    cs = loaded(desc, selector)
    _check_target(x, cs, offset, code64)
    if image is not None:
        _iret_flags(x, image, w, cpl)
    yield from set_accessed(at, desc)
    new = x.control()
    new.segs[_CS] = cs
    new.cpl = new_cpl
    if new_sp >= 0:
        x.set(_RSP, w, new_sp)
    if outer:
        _null_inaccessible(x, new_cpl)
    release(x, release_bytes)  # RET imm16: on the new stack after an outer return, else the only time
    _leave_64bit_mode(x, code64)
    x.next_rip = offset


@emulates(OpMap.ONE, (0xCA, 0xCB))
def ret_far(x: Exec, i: Insn) -> Steps:
    w = i.width
    release_bytes = i.imm & 0xFFFF if i.opcode == 0xCA else 0
    offset = yield from pop(x, w)
    selector = (yield from pop(x, w)) & 0xFFFF
    if protected(x):
        yield from _protected_return(x, w, offset, selector, release_bytes, None)
        return
    cs = _unprotected_cs(x, selector)
    _check_target(x, cs, offset, False)
    x.control().segs[_CS] = cs
    release(x, release_bytes)
    x.next_rip = offset


# IRET's RFLAGS: the bits an image may change (SDM IRET, RETURN-TO-SAME-PRIVILEGE-LEVEL), before the
# CPL/IOPL/size rules of `_iret_flags`.
_IRET_ALWAYS = STATUS_FLAGS | TF | DF | NT
_IRET_WIDE = RF | AC | ID  # 32/64-bit images only


def _iret_flags(x: Exec, image: int, w: int, cpl: int) -> None:
    """RFLAGS after a protected-mode IRET from privilege level `cpl` (RF is loaded, not cleared)."""
    mask = _IRET_ALWAYS
    if w > 2:
        mask |= _IRET_WIDE
    if cpl <= (x.rflags & IOPL) >> 12:
        mask |= IF
    if cpl == 0:
        mask |= IOPL | (VIF | VIP if w > 2 else 0)
    if w == 2:
        mask &= 0xFFFF
    x.set_flags((x.rflags & ~mask) | (image & mask))


# Real mode and virtual-8086 mode (IOPL 3): everything but VM, VIF and VIP (and IOPL in VM86).
_REAL_IRET = STATUS_FLAGS | TF | IF | DF | IOPL | NT | RF | AC | ID


@emulates(OpMap.ONE, (0xCF,))
def iret(x: Exec, i: Insn) -> Steps:
    w = i.width
    ctl = x.ctl
    vm86 = bool(x.rflags & VM)
    if vm86 and x.rflags & IOPL != IOPL:
        if ctl.cr4 & _CR4_VME:
            raise EmulationAbort(InstEmulReason.UNSUPPORTED_MODE, "IRET with CR4.VME in virtual-8086 mode")
        raise GuestFault(GP, 0)
    if protected(x) and x.rflags & NT:
        if ia32e(x):
            raise GuestFault(GP, 0)
        raise EmulationAbort(InstEmulReason.NOT_EMULATED, "IRET with NT set: a task return")
    offset = yield from pop(x, w)
    selector = (yield from pop(x, w)) & 0xFFFF
    image = yield from pop(x, w)
    if protected(x):
        if image & VM and not ia32e(x) and ctl.cpl == 0 and w == 4:
            raise EmulationAbort(InstEmulReason.UNSUPPORTED_MODE, "IRET to virtual-8086 mode")
        yield from _protected_return(x, w, offset, selector, 0, image)
        return
    cs = _unprotected_cs(x, selector)
    _check_target(x, cs, offset, False)
    mask = _REAL_IRET & ~(IOPL if vm86 else 0)  # RF included: a 32-bit image loads it (SDM: AND 257FD5H)
    if w == 2:
        mask &= 0xFFFF
    x.set_flags((x.rflags & ~mask) | (image & mask))
    x.control().segs[_CS] = cs
    x.next_rip = offset
