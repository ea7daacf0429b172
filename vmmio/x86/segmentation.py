"""Segment-relative offsets to linear addresses, with the checks the CPU makes on the way.

64-bit mode: only FS/GS contribute a base, limits and types are not checked, and every byte of the
access must be canonical (48 bits, or 57 with CR4.LA57). Other modes (16/32-bit protected, virtual-8086,
compatibility, real): the segment must be usable (protected modes only: real mode has no null
selector), its type must allow the access, the offset must lie within the limit (expand-up or
expand-down), and base plus offset wraps to 32 bits. Real mode uses the descriptor cache as it stands
(unreal-mode limits included); it lets writes through a code-type CS and fetches through any CS.
Real-mode linear addresses can exceed 1 MiB (base 0xFFFF0 plus 0xFFFF): A20 masking is out of scope.
In every mode, #AC(0) when CR0.AM, RFLAGS.AC and CPL 3 hold and a data access is misaligned; it is
checked after the limit/canonical checks, so those faults take priority.
"""

from __future__ import annotations

from vmmio.x86.faults import AC, GP, PFEC_I, PFEC_W, SS, GuestFault
from vmmio.x86.regs import AC as RFLAGS_AC
from vmmio.x86.regs import Seg
from vmmio.x86.state import CR0_AM, CR0_PE, CR4_LA57, Control

_FS, _SS = int(Seg.FS), int(Seg.SS)
_MASK64 = (1 << 64) - 1
_MAX32 = 0xFFFF_FFFF

# What a segment's type allows, indexed by S<<4 | type (protected mode) or by type (real mode).
_READ, _WRITE, _FETCH, _DOWN = 1, 2, 4, 8


def _protected_rights(s_type: int) -> int:
    """SDM 3.4.5.1: data segments read, write if W, expand down if E; code segments fetch, read if R."""
    if not s_type & 0x10:
        return 0  # a system descriptor never gives access through a data/code segment register
    if s_type & 8:
        return _FETCH | (_READ if s_type & 2 else 0)
    return _READ | (_WRITE if s_type & 2 else 0) | (_DOWN if s_type & 4 else 0)


def _real_rights(seg_type: int) -> int:
    """Real mode keeps the descriptor cache's type (unreal mode), but code segments take writes and
    fetches come from whatever CS holds (the reset CS is a data segment), as KVM's emulator has it."""
    rights = _protected_rights(0x10 | seg_type) | _FETCH
    return rights | _WRITE if seg_type & 8 else rights


_PROTECTED = tuple(_protected_rights(n) for n in range(32))
_REAL = tuple(_real_rights(n) for n in range(16))
# The right an access needs, by its PFEC_W/PFEC_I bits (read, write, fetch).
_NEEDED = {0: _READ, PFEC_W: _WRITE, PFEC_I: _FETCH, PFEC_W | PFEC_I: _WRITE}
# Alignment #AC checks per access size (SDM table 6-7: 10-byte x87 operands need 8, 6-byte pointers 4).
_ALIGN = {2: 1, 4: 3, 6: 3, 8: 7, 10: 7, 16: 15, 32: 31, 64: 63}


def _fault(seg: int) -> GuestFault:
    return GuestFault(SS if seg == _SS else GP, 0)


def linear_address(
    ctl: Control, mode: int, seg: int, offset: int, size: int, access: int, rflags: int
) -> int:
    """Linear address of `size` bytes at `seg:offset`; #GP(0)/#SS(0)/#AC(0) where the CPU raises them.

    `access` holds the PFEC_W/PFEC_I bits of the access (write, instruction fetch); `rflags` is the
    instruction's RFLAGS (for alignment checking). `offset` is already wrapped to the address size.
    """
    if mode == 64:
        la = offset
        if seg >= _FS:  # FS or GS
            la = (la + ctl.segs[seg].base) & _MASK64
        last = (la + size - 1) & _MASK64
        # Canonical: bits 63:47 (63:56 with LA57) all equal, for the first and the last byte.
        bits = 56 if ctl.cr4 & CR4_LA57 else 47
        low = 1 << bits
        if ((la + low) & _MASK64) >> (bits + 1) or ((last + low) & _MASK64) >> (bits + 1):
            raise _fault(seg)
    else:
        desc = ctl.segs[seg]
        if ctl.cr0 & CR0_PE:
            if desc.unusable:
                raise _fault(seg)
            rights = _PROTECTED[desc.s << 4 | desc.type]
            if access & PFEC_I and not rights & _FETCH and desc.type == 3 and desc.dpl == 3:
                # A data-type CS exists only in virtual-8086 mode (the kernel passes no RFLAGS.VM
                # for fetches): it is fetchable there.
                rights |= _FETCH
        else:
            rights = _REAL[desc.type & 0xF]
        if not rights & _NEEDED[access & (PFEC_W | PFEC_I)]:
            raise _fault(seg)
        limit = desc.limit
        end = (offset + size - 1) & _MAX32
        if rights & _DOWN:
            # Expand-down: valid offsets are limit+1 up to 0xFFFF or 0xFFFFFFFF by D/B.
            upper = _MAX32 if desc.db else 0xFFFF
            if offset <= limit or end <= limit or end > upper or (end < offset and upper != _MAX32):
                raise _fault(seg)
        elif offset > limit or end > limit or (end < offset and limit != _MAX32):
            # An access wrapping past 4 GiB in a 4 GiB segment is implementation-specific (SDM 5.3):
            # like KVM, it is allowed and wraps.
            raise _fault(seg)
        la = (desc.base + offset) & _MAX32
    if (
        rflags & RFLAGS_AC
        and size > 1
        and ctl.cpl == 3
        and ctl.cr0 & CR0_AM
        and not access & PFEC_I
        and la & _ALIGN.get(size, 7)
    ):
        raise GuestFault(AC, 0)
    return la
