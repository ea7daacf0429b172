"""Exception and interrupt delivery through the guest's IDT, as the CPU performs it.

Pure computation over a snapshot of the CPU (`Regs`, `Control`) and guest memory reached through the
guest's own paging: `deliver_event` returns what the backend must load (RIP, RSP, RFLAGS, CS, SS, CPL,
CR2) after it has written the frame to the guest's stack, or why the vCPU shuts down. Faults during
delivery escalate as the SDM says (vol. 3, 6.15 table 6-5): a contributory fault or #PF while
delivering one becomes #DF, a fault while delivering #DF is a triple fault.

Modelled: real-mode delivery through the IVT; protected mode with 32-bit interrupt and trap gates at the
same privilege; IA-32e mode with 64-bit gates, privilege changes through TSS.RSPn and the IST. Not
modelled (the vCPU shuts down with `unsupported` set, saying which): task gates, 16-bit gates, gate
selectors in the LDT, 32-bit delivery with a privilege change, virtual-8086 mode.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from vmmio.x86.descriptors import (
    DESC_B,
    DESC_G,
    DESC_L,
    DESC_P,
    DESC_S,
    Descriptor,
    check_gate_target,
    descriptor_address,
    descriptor_base_limit,
    segment_from_descriptor,
)
from vmmio.x86.faults import DF, GP, NP, PFEC_W, SS, TS, GuestFault, double_fault
from vmmio.x86.paging import TableMemory, TranslationError, Updates, Walker, apply_updates
from vmmio.x86.regs import AC, IF, NT, RF, TF, VM
from vmmio.x86.state import CR0_PE, EFER_LMA, Control, Regs, Segment

PAGE_SIZE = 4096
_MASK64 = (1 << 64) - 1

_GATE_INTR, _GATE_TRAP = 0xE, 0xF
_GATES_16_AND_TASK = (0x5, 0x6, 0x7)


class Unsupported(Exception):
    """Delivery needs something this module does not model."""


@dataclass(slots=True)
class Delivered:
    """The state after a successful delivery (the frame is already in guest memory)."""

    regs: Regs  # RSP, RIP and RFLAGS changed; GPRs otherwise as given
    cs: Segment
    ss: Segment | None  # a new SS cache (privilege change), or None: unchanged
    cpl: int
    cr2: int | None  # CR2 to load (the address of the last #PF raised), or None: unchanged


@dataclass(frozen=True, slots=True)
class Shutdown:
    """Delivery ended the vCPU: a triple fault, or an event this module cannot deliver."""

    detail: str
    unsupported: bool


_Piece = tuple[memoryview, int]  # a view of one page's part of an access, and its length


class LinearMemory:
    """Guest memory by linear address through the guest's paging; RAM only (delivery never hits MMIO
    in a guest that works, and a device cannot take part in delivery)."""

    def __init__(self, walker: Walker, ram: TableMemory) -> None:
        self.walker = walker
        self.ram = ram

    def _pieces(
        self, ctl: Control, la: int, size: int, access: int
    ) -> tuple[list[tuple[memoryview, int]], Updates]:
        """(view, length) per page of an access, and its A/D updates (not yet applied)."""
        pieces: list[tuple[memoryview, int]] = []
        updates: Updates = []
        while size:
            n = min(size, PAGE_SIZE - (la & (PAGE_SIZE - 1)))
            try:
                gpa, upd = self.walker.walk(ctl, la & _MASK64, access, False)
            except TranslationError as e:
                raise Unsupported(f"delivery: {e}") from None
            region = self.ram.ram_at(gpa, n)
            if region is None:
                raise Unsupported(f"delivery touches {gpa:#x}, which is not RAM")
            off = gpa - region.gpa
            pieces.append((region.view[off : off + n], n))
            updates += upd
            la, size = la + n, size - n
        return pieces, updates

    def read(self, ctl: Control, la: int, size: int, access: int = 0) -> bytes:
        pieces, updates = self._pieces(ctl, la, size, access)
        apply_updates(updates)
        return b"".join(bytes(v) for v, _ in pieces)

    def push(self, ctl: Control, slots: list[tuple[int, int]], width: int, access: int) -> None:
        """Write a frame in push order (highest slot first), all or nothing.

        Every slot is translated before anything is written, so the first slot that faults decides
        the exception and CR2, as the CPU's successive pushes would.
        """
        planned: list[tuple[list[_Piece], bytes]] = []
        updates: Updates = []
        for la, word in slots:
            pieces, upd = self._pieces(ctl, la, width, access)
            planned.append((pieces, word.to_bytes(width, "little")))
            updates += upd
        apply_updates(updates)
        for pieces, data in planned:
            pos = 0
            for view, n in pieces:
                view[:] = data[pos : pos + n]
                pos += n


def canonical(la: int) -> bool:
    return ((la + (1 << 47)) & _MASK64) < (1 << 48)


def _stack_ok(ss: Segment, offset: int, size: int, width: int) -> bool:
    """Whether [offset, offset+size) fits SS's limit (expand-up or expand-down data segment)."""
    last = offset + size - 1
    if last > width:
        return False
    if ss.type & 4:  # expand-down: valid offsets are (limit, top]
        return offset > ss.limit
    return last <= ss.limit


def deliver_event(
    vector: int,
    error_code: int | None,
    regs: Regs,
    ctl: Control,
    memory: LinearMemory,
    *,
    soft_len: int = 0,
    cr2: int | None = None,
    external: bool = False,
) -> Delivered | Shutdown:
    """Deliver `vector`, escalating faults during delivery as the CPU does.

    `regs.rip` is the return address: the faulting instruction for a fault, the next instruction for
    a software interrupt (INT n) of `soft_len` bytes, whose own faults are reported at the INT, or for
    an `external` interrupt (benign: a fault while delivering one is delivered as itself, never #DF).
    `cr2` is the CR2 the event sets (#PF).
    """
    rip = regs.rip
    benign = external
    while True:
        try:
            done = _deliver(vector, error_code, soft_len > 0, rip, regs, ctl, memory)
            done.cr2 = cr2
            return done
        except GuestFault as f:
            if f.cr2 is not None:
                cr2 = f.cr2
            if vector == DF:
                return Shutdown(f"triple fault: #{f.vector} while delivering #DF", False)
            if not soft_len and not benign and double_fault(vector, f.vector):
                vector, error_code = DF, 0
            else:
                vector, error_code = f.vector, f.error_code
            rip -= soft_len
            soft_len = 0
            benign = False
        except Unsupported as u:
            return Shutdown(str(u), True)


def _deliver(
    vector: int, error_code: int | None, soft: bool, rip: int, regs: Regs, ctl: Control, memory: LinearMemory
) -> Delivered:
    if not ctl.cr0 & CR0_PE:
        return _deliver_real(vector, rip, regs, ctl, memory)
    if regs.rflags & VM:
        raise Unsupported("exception delivery in virtual-8086 mode is not implemented")
    idt_base, idt_limit = ctl.idtr
    ext = 0 if soft else 1
    idt_ec = vector * 8 + 2 + ext
    long_mode = bool(ctl.efer & EFER_LMA)
    size = 16 if long_mode else 8
    if vector * size + size - 1 > idt_limit:
        raise GuestFault(GP, idt_ec)
    raw = memory.read(ctl, idt_base + vector * size, size)
    lo, hi = struct.unpack_from("<II", raw)
    gate_type = (hi >> 8) & 0x1F  # type with the S bit, which must be 0
    if long_mode:
        if gate_type not in (_GATE_INTR, _GATE_TRAP):
            raise GuestFault(GP, idt_ec)
    elif gate_type in _GATES_16_AND_TASK:
        raise Unsupported(f"IDT entry {vector}: task gates and 16-bit gates are not implemented")
    elif gate_type not in (_GATE_INTR, _GATE_TRAP):
        raise GuestFault(GP, idt_ec)
    if soft and (hi >> 13) & 3 < ctl.cpl:
        raise GuestFault(GP, vector * 8 + 2)
    if not hi & DESC_P:
        raise GuestFault(NP, idt_ec)
    selector = lo >> 16
    offset = (lo & 0xFFFF) | (hi & 0xFFFF_0000)
    if long_mode:
        offset |= struct.unpack_from("<I", raw, 8)[0] << 32
    e1, e2, new_cpl = _code_segment(ctl, selector, ext, memory)
    rflags = regs.rflags
    ec = [] if error_code is None else [error_code]
    rsp_now = regs.gprs[4]
    new_ss: Segment | None = None
    if long_mode:
        if not e2 & DESC_L or e2 & DESC_B:
            raise GuestFault(GP, (selector & 0xFFFC) + ext)
        ist = hi & 7
        rsp = rsp_now
        if ist or new_cpl < ctl.cpl:
            rsp = _tss_stack(ctl, ist, new_cpl, ext, memory)
        rsp &= ~0xF & _MASK64
        frame = [*ec, rip, ctl.segs[1].selector, rflags, rsp_now, ctl.segs[2].selector]
        slots = [((rsp - 8 * (k + 1)) & _MASK64, w & _MASK64) for k, w in enumerate(reversed(frame))]
        if not all(canonical(la) for la, _ in slots):
            raise GuestFault(SS, ext)
        memory.push(ctl, slots, 8, PFEC_W)  # implicit supervisor writes, whatever the CPL
        new_rsp = slots[-1][0]
        if new_cpl != ctl.cpl:
            new_ss = Segment(new_cpl, 0, 0, 0, s=False, dpl=new_cpl, present=False, unusable=True)  # null SS
    else:
        if new_cpl != ctl.cpl:
            raise Unsupported("32-bit delivery with a privilege change is not implemented")
        ss = ctl.segs[2]
        frame = [*ec, rip & 0xFFFF_FFFF, ctl.segs[1].selector, rflags & 0xFFFF_FFFF]
        width = 0xFFFF_FFFF if ss.db else 0xFFFF
        esp = rsp_now & width
        new_esp = (esp - 4 * len(frame)) & width
        if not _stack_ok(ss, new_esp, 4 * len(frame), width):
            raise GuestFault(SS, ext)
        _base, cs_limit = descriptor_base_limit(e1, e2)
        if offset > cs_limit:
            raise GuestFault(GP, 0)
        slots = [
            ((ss.base + ((esp - 4 * (k + 1)) & width)) & 0xFFFF_FFFF, w)
            for k, w in enumerate(reversed(frame))
        ]
        memory.push(ctl, slots, 4, PFEC_W)
        new_rsp = (rsp_now & ~width) | new_esp
    rflags &= ~(TF | NT | RF | VM)
    if gate_type == _GATE_INTR:
        rflags &= ~IF
    out = regs.copy()
    out.gprs[4] = new_rsp
    out.rip = offset
    out.rflags = rflags
    cs = segment_from_descriptor((selector & 0xFFFC) | new_cpl, e1, e2)
    return Delivered(out, cs, new_ss, new_cpl, None)


def _code_segment(ctl: Control, selector: int, ext: int, memory: LinearMemory) -> tuple[int, int, int]:
    """The gate's target code descriptor (e1, e2) and the CPL it runs at, with the CPU's checks."""
    if not selector & 0xFFFC:
        raise GuestFault(GP, ext)
    if selector & 4:
        raise Unsupported("gate selector in the LDT is not implemented")
    at = descriptor_address(ctl, selector, ext=ext)
    e1, e2 = struct.unpack("<II", memory.read(ctl, at, 8))
    return e1, e2, check_gate_target(ctl.cpl, selector, Descriptor(e2 << 32 | e1), ext)


def _tss_stack(ctl: Control, ist: int, cpl: int, ext: int, memory: LinearMemory) -> int:
    """RSP for a 64-bit delivery from the TSS: IST entry `ist` if non-zero, else RSP[cpl]."""
    tr = ctl.tr
    offset = 36 + 8 * (ist - 1) if ist else 4 + 8 * cpl
    if offset + 7 > tr.limit:
        raise GuestFault(TS, (tr.selector & 0xFFFC) + ext)
    rsp: int = struct.unpack("<Q", memory.read(ctl, tr.base + offset, 8))[0]
    return rsp


def _frame_slots(frame: list[int], base: int, sp: int, width: int, wrap: int) -> list[tuple[int, int]]:
    """(linear address, word) of each push of `frame` (listed lowest address first) below SS:SP."""
    pushes = enumerate(reversed(frame))
    return [((base + ((sp - width * (k + 1)) & wrap)) & 0xFFFF_FFFF, w) for k, w in pushes]


def _deliver_real(vector: int, rip: int, regs: Regs, ctl: Control, memory: LinearMemory) -> Delivered:
    """Real mode: the IVT holds 4-byte far pointers; FLAGS, CS and IP are pushed, no error code."""
    ivt_base, ivt_limit = ctl.idtr
    if vector * 4 + 3 > ivt_limit:
        raise GuestFault(GP, 0)  # a real-mode CPU shuts down or #DFs here; #GP escalates the same way
    ip, cs_sel = struct.unpack("<HH", memory.read(ctl, (ivt_base + vector * 4) & 0xFFFF_FFFF, 4))
    ss = ctl.segs[2]
    sp = regs.gprs[4] & 0xFFFF
    frame = [rip & 0xFFFF, ctl.segs[1].selector, regs.rflags & 0xFFFF]
    slots = [
        ((ss.base + ((sp - 2 * (k + 1)) & 0xFFFF)) & 0xFFFF_FFFF, w) for k, w in enumerate(reversed(frame))
    ]
    memory.push(ctl, slots, 2, PFEC_W)
    out = regs.copy()
    out.gprs[4] = (regs.gprs[4] & ~0xFFFF) | ((sp - 6) & 0xFFFF)
    out.rip = ip
    out.rflags = regs.rflags & ~(IF | TF | AC | RF)
    old = ctl.segs[1]
    cs = Segment(cs_sel, cs_sel << 4, old.limit, old.type, old.s, old.dpl, old.present, old.db, False, old.g)
    return Delivered(out, cs, None, 0, None)


__all__ = [
    "DESC_B",
    "DESC_G",
    "DESC_L",
    "DESC_P",
    "DESC_S",
    "Delivered",
    "LinearMemory",
    "Shutdown",
    "Unsupported",
    "canonical",
    "deliver_event",
    "descriptor_base_limit",
    "segment_from_descriptor",
]
