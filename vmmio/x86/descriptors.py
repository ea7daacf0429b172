"""Selectors and segment descriptors: where a descriptor lives and what loading it does, with the checks.

Pure computation over a `Control` and the descriptor's 8 bytes (as one little-endian integer): whoever
reads the descriptor (the kernel's semantics with implicit supervisor reads, exception delivery through
guest RAM) passes it in, and writes the accessed or busy bit back if `needs_accessed` says so. The checks
follow the segment-load pseudo-code of the SDM (vol. 2: MOV, POP, LDS/LES/LFS/LGS/LSS, far JMP/CALL,
RET, IRET, LLDT, LTR; vol. 3, 5.5-5.8): #GP(0) for a null selector where one is not allowed,
#GP(selector) for table limits, types and privilege, #NP(selector) (#SS(selector) for SS) for a segment
that is not present. Error codes are `selector & 0xFFFC`, plus EXT for an event from outside.

A null selector loaded into a data segment register leaves the register unusable (VMX's "unusable" bit)
with base, limit and attributes cleared, as Intel CPUs do (FS/GS bases included: AMD keeps them).
"""

from __future__ import annotations

from vmmio.x86.faults import GP, NP, SS, GuestFault
from vmmio.x86.state import CR4_LA57, Control, Segment

# Descriptor bits, in the high dword (the layout QEMU also keeps its segment caches in).
DESC_ACCESSED = 1 << 8  # code/data: accessed; TSS: busy is bit 9 (type 9 -> 11)
DESC_RW = 1 << 9  # data: writable; code: readable
DESC_CE = 1 << 10  # data: expand-down; code: conforming
DESC_CODE = 1 << 11
DESC_S = 1 << 12
DESC_P = 1 << 15
DESC_L = 1 << 21
DESC_B = 1 << 22
DESC_G = 1 << 23
DESC_TSS_BUSY = 1 << 9

# System descriptor types (S = 0).
SYS_LDT = 0x2
SYS_TSS16 = 0x1
SYS_TSS16_BUSY = 0x3
SYS_TSS = 0x9  # 32-bit TSS, or 64-bit in IA-32e mode
SYS_TSS_BUSY = 0xB
SYS_CALL_GATE16 = 0x4
SYS_TASK_GATE = 0x5
SYS_CALL_GATE = 0xC  # 32-bit, or 64-bit in IA-32e mode

DESC_SIZE = 8
ACCESS_BYTE = 5  # the byte holding type, S, DPL and P: the one the accessed and busy bits live in


class Descriptor:
    """An 8-byte segment descriptor (`raw`: the 64-bit little-endian value), read field by field."""

    __slots__ = ("hi", "raw")

    def __init__(self, raw: int) -> None:
        self.raw = raw
        self.hi = raw >> 32

    @property
    def type(self) -> int:
        return (self.hi >> 8) & 0xF

    @property
    def s(self) -> bool:
        return bool(self.hi & DESC_S)

    @property
    def dpl(self) -> int:
        return (self.hi >> 13) & 3

    @property
    def present(self) -> bool:
        return bool(self.hi & DESC_P)

    @property
    def code(self) -> bool:
        return self.s and bool(self.hi & DESC_CODE)

    @property
    def data(self) -> bool:
        return self.s and not self.hi & DESC_CODE

    @property
    def conforming(self) -> bool:
        return self.code and bool(self.hi & DESC_CE)

    @property
    def readable(self) -> bool:
        """Data segments always; code segments with R."""
        return self.s and (not self.hi & DESC_CODE or bool(self.hi & DESC_RW))

    @property
    def writable(self) -> bool:
        return self.data and bool(self.hi & DESC_RW)

    @property
    def long(self) -> bool:
        return bool(self.hi & DESC_L)

    @property
    def big(self) -> bool:
        return bool(self.hi & DESC_B)

    @property
    def accessed(self) -> bool:
        return bool(self.hi & DESC_ACCESSED)

    @property
    def access_byte(self) -> int:
        return (self.raw >> 8 * ACCESS_BYTE) & 0xFF

    def base_limit(self) -> tuple[int, int]:
        return descriptor_base_limit(self.raw & 0xFFFF_FFFF, self.hi)

    def segment(self, selector: int) -> Segment:
        return segment_from_descriptor(selector, self.raw & 0xFFFF_FFFF, self.hi)


def descriptor_base_limit(e1: int, e2: int) -> tuple[int, int]:
    """Base and byte-granular limit of a legacy 8-byte descriptor (low and high dwords)."""
    base = (e1 >> 16) | ((e2 & 0xFF) << 16) | (e2 & 0xFF00_0000)
    limit = (e1 & 0xFFFF) | (e2 & 0xF_0000)
    if e2 & DESC_G:
        limit = (limit << 12) | 0xFFF
    return base, limit


def segment_cache(selector: int, base: int, limit: int, e2: int) -> Segment:
    """The segment cache for `selector` with this base and (byte-granular) limit and the attributes of a
    descriptor's high dword `e2` (type, S, DPL, P, L, D/B, G): also how QEMU keeps its caches."""
    present = bool(e2 & DESC_P)
    return Segment(
        selector=selector & 0xFFFF,
        base=base,
        limit=limit,
        type=(e2 >> 8) & 0xF,
        s=bool(e2 & DESC_S),
        dpl=(e2 >> 13) & 3,
        present=present,
        db=bool(e2 & DESC_B),
        l=bool(e2 & DESC_L),
        g=bool(e2 & DESC_G),
        unusable=not present,
    )


def segment_from_descriptor(selector: int, e1: int, e2: int) -> Segment:
    """The segment cache a descriptor loads."""
    return segment_cache(selector, *descriptor_base_limit(e1, e2), e2)


def null_segment(selector: int, dpl: int = 0) -> Segment:
    """What a null selector loads: an unusable register (SS keeps DPL = CPL, as VMX requires)."""
    return Segment(selector & 0xFFFF, 0, 0, 0, s=False, dpl=dpl, present=False, unusable=True)


def real_mode_segment(selector: int, old: Segment) -> Segment:
    """Real mode: selector and base (selector * 16) change; limit and attributes stay (unreal mode)."""
    sel = selector & 0xFFFF
    return Segment(sel, sel << 4, old.limit, old.type, old.s, old.dpl, old.present, old.db, old.l, old.g)


def vm86_segment(selector: int, code: bool = False) -> Segment:
    """Virtual-8086 mode: base selector * 16, 64 KiB, read/write (CS: execute/read), DPL 3."""
    return Segment(selector & 0xFFFF, (selector & 0xFFFF) << 4, 0xFFFF, 0xB if code else 0x3, True, 3)


def is_null(selector: int) -> bool:
    """Index 0 of the GDT, whatever the RPL."""
    return not selector & 0xFFFC


def selector_error(selector: int, ext: int = 0) -> int:
    return (selector & 0xFFFC) | ext


def descriptor_address(ctl: Control, selector: int, *, size: int = DESC_SIZE, ext: int = 0) -> int:
    """Linear address of the descriptor `selector` names (8 bytes, or 16 for a system descriptor in
    IA-32e mode); #GP(selector) when it does not lie within the GDT, or the LDT for TI = 1 (a null or
    unusable LDTR has no room)."""
    if selector & 4:
        ldtr = ctl.ldtr
        if ldtr.unusable or not ldtr.present:
            raise GuestFault(GP, selector_error(selector, ext))
        base, limit = ldtr.base, ldtr.limit
    else:
        base, limit = ctl.gdtr
    index = selector & 0xFFF8
    if index + size - 1 > limit:
        raise GuestFault(GP, selector_error(selector, ext))
    return base + index


def canonical(ctl: Control, address: int) -> bool:
    """Bits 63:47 (63:56 with LA57) all equal."""
    bits = 56 if ctl.cr4 & CR4_LA57 else 47
    top = (address & ((1 << 64) - 1)) >> bits
    return top in (0, (1 << (64 - bits)) - 1)


def _gp(selector: int, ext: int = 0) -> GuestFault:
    return GuestFault(GP, selector_error(selector, ext))


def check_data_load(cpl: int, selector: int, desc: Descriptor) -> None:
    """DS, ES, FS or GS with a non-null selector: a data or readable code segment, at a privilege the
    selector's RPL and the CPL may use (conforming code excepted), present."""
    if not desc.readable:
        raise _gp(selector)
    if not desc.conforming and (selector & 3 > desc.dpl or cpl > desc.dpl):
        raise _gp(selector)
    if not desc.present:
        raise GuestFault(NP, selector_error(selector))


def check_stack_load(cpl: int, selector: int, desc: Descriptor) -> None:
    """SS with a non-null selector: RPL = DPL = CPL, a writable data segment, present (else #SS)."""
    if selector & 3 != cpl or not desc.writable or desc.dpl != cpl:
        raise _gp(selector)
    if not desc.present:
        raise GuestFault(SS, selector_error(selector))


def check_code_target(cpl: int, selector: int, desc: Descriptor, ia32e: bool) -> None:
    """Far JMP/CALL straight to a code segment: conforming with DPL <= CPL, or non-conforming with
    RPL <= CPL and DPL = CPL; present; in IA-32e mode not L and D together."""
    if not desc.code:
        raise _gp(selector)
    if desc.conforming:
        if desc.dpl > cpl:
            raise _gp(selector)
    elif selector & 3 > cpl or desc.dpl != cpl:
        raise _gp(selector)
    if not desc.present:
        raise GuestFault(NP, selector_error(selector))
    if ia32e and desc.long and desc.big:
        raise _gp(selector)


def check_return_code(cpl: int, selector: int, desc: Descriptor, ia32e: bool) -> int:
    """RET far / IRET to a code segment: RPL >= CPL; conforming with DPL <= RPL or non-conforming with
    DPL = RPL; present. Returns the new CPL (the selector's RPL)."""
    rpl = selector & 3
    if not desc.code or rpl < cpl:
        raise _gp(selector)
    if (desc.dpl > rpl) if desc.conforming else (desc.dpl != rpl):
        raise _gp(selector)
    if not desc.present:
        raise GuestFault(NP, selector_error(selector))
    if ia32e and desc.long and desc.big:
        raise _gp(selector)
    return rpl


def check_gate_target(cpl: int, selector: int, desc: Descriptor, ext: int) -> int:
    """The code segment an interrupt or trap gate names: code, DPL <= CPL, present. Returns the CPL the
    handler runs at (the CPL for a conforming segment, else its DPL)."""
    if not desc.code or desc.dpl > cpl:
        raise _gp(selector, ext)
    if not desc.present:
        raise GuestFault(NP, selector_error(selector, ext))
    return cpl if desc.conforming else desc.dpl


def check_system_load(selector: int, desc: Descriptor, types: tuple[int, ...], high: int | None) -> None:
    """LLDT/LTR: a system descriptor of one of `types`, present; in IA-32e mode (`high`: the upper 8
    bytes of the 16-byte descriptor) the upper type field must be 0."""
    if desc.s or desc.type not in types:
        raise _gp(selector)
    if not desc.present:
        raise GuestFault(NP, selector_error(selector))
    if high is not None and (high >> 40) & 0x1F:
        raise _gp(selector)


def system_segment(selector: int, desc: Descriptor, high: int | None) -> Segment:
    """The LDTR/TR cache a system descriptor loads (a 64-bit base with the upper 8 bytes in IA-32e mode)."""
    seg = desc.segment(selector)
    if high is not None:
        seg.base |= (high & 0xFFFF_FFFF) << 32
    return seg


def verify(cpl: int, selector: int, desc: Descriptor | None, write: bool) -> bool:
    """VERR/VERW: ZF, without a fault. A code/data segment usable at max(CPL, RPL) (conforming code
    at any level) that is readable (VERR) or writable (VERW); presence is not checked."""
    if desc is None or not desc.s:
        return False
    if not desc.conforming and (cpl > desc.dpl or selector & 3 > desc.dpl):
        return False
    return desc.writable if write else desc.readable


__all__ = [
    "ACCESS_BYTE",
    "DESC_ACCESSED",
    "DESC_B",
    "DESC_CE",
    "DESC_CODE",
    "DESC_G",
    "DESC_L",
    "DESC_P",
    "DESC_RW",
    "DESC_S",
    "DESC_SIZE",
    "DESC_TSS_BUSY",
    "SYS_CALL_GATE",
    "SYS_CALL_GATE16",
    "SYS_LDT",
    "SYS_TASK_GATE",
    "SYS_TSS",
    "SYS_TSS16",
    "SYS_TSS16_BUSY",
    "SYS_TSS_BUSY",
    "Descriptor",
    "canonical",
    "check_code_target",
    "check_data_load",
    "check_gate_target",
    "check_return_code",
    "check_stack_load",
    "check_system_load",
    "descriptor_address",
    "descriptor_base_limit",
    "is_null",
    "null_segment",
    "real_mode_segment",
    "segment_from_descriptor",
    "selector_error",
    "system_segment",
    "verify",
    "vm86_segment",
]
