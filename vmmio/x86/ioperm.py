"""Whether an I/O instruction may touch a port: IOPL, then the TSS I/O-permission bitmap (SDM 19.5).

In protected mode with CPL > IOPL, and always in virtual-8086 mode, every port of the access must have
its bit clear in the bitmap the TSS points at (the 16-bit offset at TSS+0x66, inside the TSS limit).
Real mode and CPL <= IOPL allow everything. A denied access is #GP(0) before any other effect.
"""

from __future__ import annotations

from collections.abc import Callable

from vmmio.x86.faults import GP, GuestFault
from vmmio.x86.regs import IOPL, VM
from vmmio.x86.state import CR0_PE, Control

_TSS_TYPES = frozenset((0x9, 0xB))  # available / busy 32-bit (or 64-bit) TSS
_IOMAP_BASE = 0x66  # offset of the bitmap's offset in the TSS
_MIN_LIMIT = 0x67


def check_io(ctl: Control, rflags: int, port: int, size: int, read: Callable[[int, int], bytes]) -> None:
    """Raise #GP(0) unless the access to ports [port, port+size) is allowed; `read(la, n)` reads the
    TSS by linear address (an implicit supervisor read through the guest's paging)."""
    if not ctl.cr0 & CR0_PE:
        return
    if not rflags & VM and ctl.cpl <= (rflags & IOPL) >> 12:
        return
    tr = ctl.tr
    if tr.s or tr.type not in _TSS_TYPES or not tr.present or tr.limit < _MIN_LIMIT:
        raise GuestFault(GP, 0)
    base = int.from_bytes(read(tr.base + _IOMAP_BASE, 2), "little")
    first = base + (port >> 3)
    if first + 1 > tr.limit:  # both bytes the access may span must be inside the TSS
        raise GuestFault(GP, 0)
    bits = int.from_bytes(read(tr.base + first, 2), "little")
    if (bits >> (port & 7)) & ((1 << size) - 1):
        raise GuestFault(GP, 0)
