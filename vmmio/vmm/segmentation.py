"""Segment-relative offsets to linear addresses, with the checks the CPU makes on the way.

64-bit mode: only FS/GS contribute a base and the result must be canonical. Other modes: base plus
offset, wrapped to 32 bits, checked against the limit (expand-up data/code segments).
"""

from __future__ import annotations

from vmmio.backends.base import Control
from vmmio.vmm.faults import GP, SS, GuestFault
from vmmio.x86.regs import Seg

_FS, _GS, _SS = int(Seg.FS), int(Seg.GS), int(Seg.SS)
_CANON_LOW = 1 << 47
_CANON_SPAN = 1 << 48
_MASK64 = (1 << 64) - 1


def _fault(seg: int) -> GuestFault:
    return GuestFault(SS if seg == _SS else GP, 0)


def linear_address(ctl: Control, mode: int, seg: int, offset: int, size: int) -> int:
    """Linear address of `size` bytes at `seg:offset`; #GP(0)/#SS(0) where the CPU raises them."""
    if mode == 64:
        la = offset
        if seg >= _FS:  # FS or GS
            la = (la + ctl.segs[seg].base) & _MASK64
        last = (la + size - 1) & _MASK64
        # Canonical: bits 63:47 all equal, for the first and the last byte of the access.
        if (la + _CANON_LOW) & _MASK64 >= _CANON_SPAN or (last + _CANON_LOW) & _MASK64 >= _CANON_SPAN:
            raise _fault(seg)
        return la
    desc = ctl.segs[seg]
    if desc.unusable:
        raise _fault(seg)
    limit = desc.limit
    if offset + size - 1 > limit:
        raise _fault(seg)
    return (desc.base + offset) & 0xFFFF_FFFF
