"""Exceptions an instruction raises in the guest: vectors, error-code bits and their classes."""

from __future__ import annotations

# Exception vectors (SDM vol. 3, table 6-1).
DE, DB, NMI, BP, OF, BR, UD, NM, DF, TS, NP, SS, GP, PF, MF, AC, MC, XM = (
    0,
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    10,
    11,
    12,
    13,
    14,
    16,
    17,
    18,
    19,
)
CP = 21

# Vectors that push an error code, and the classes that decide double-fault escalation (table 6-5).
HAS_ERROR_CODE = frozenset((DF, TS, NP, SS, GP, PF, AC, CP, 29, 30))
CONTRIBUTORY = frozenset((DE, TS, NP, SS, GP))

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


def double_fault(first: int, second: int) -> bool:
    """Whether `second`, raised while delivering `first`, becomes #DF (SDM vol. 3, table 6-5)."""
    if first == PF:
        return second == PF or second in CONTRIBUTORY
    return first in CONTRIBUTORY and second in CONTRIBUTORY
