"""Outcomes that end an instruction early: an exception for the guest, or giving up on emulation."""

from __future__ import annotations

# Exception vectors the kernel raises.
DE, DB, UD, SS, GP, PF, AC = 0, 1, 6, 12, 13, 14, 17

# #PF error-code bits; the same bits describe the access being translated.
PFEC_P = 1 << 0
PFEC_W = 1 << 1
PFEC_U = 1 << 2
PFEC_RSVD = 1 << 3
PFEC_I = 1 << 4
PFEC_PK = 1 << 5


class GuestFault(Exception):
    """The instruction raises an exception in the guest; nothing uncommitted takes effect."""

    def __init__(self, vector: int, error_code: int | None = None, cr2: int | None = None) -> None:
        super().__init__(vector, error_code, cr2)
        self.vector = vector
        self.error_code = error_code
        self.cr2 = cr2

    def __repr__(self) -> str:
        ec = "" if self.error_code is None else f", ec={self.error_code:#x}"
        cr2 = "" if self.cr2 is None else f", cr2={self.cr2:#x}"
        return f"GuestFault(vector={self.vector}{ec}{cr2})"


class EmulationAbort(Exception):
    """The kernel cannot emulate this instruction faithfully; userspace gets an INST_EMUL exit."""

    def __init__(self, reason: int, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail
