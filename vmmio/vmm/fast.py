"""What the native exit path learns from a planned MOV (docs/fastpath.md).

A backend may offer a native exit path (`backend.fastpath`, UnicornBackend's `vmmio._fastpath.FastPath`):
one C call completes the pending `Direct` form, runs the engine and checks the next stop against the
plans it learned. It learns a plan from what `Vcpu._direct` checks in Python, in data: RIP; the host
address of the instruction's bytes in RAM and the bytes; the host address and value of every
paging-structure entry the translations of its code page and of its access depend on (`Tlb` groups); the
memory operand's shape; the access's offset, RFLAGS.AC and page; and how the form completes (which
register, how wide, extended how) or what it stores. Every check the native path makes is one the Python
path makes, so both give the same exits (tests/test_exit_path.py runs both).
"""

from __future__ import annotations

import ctypes
import mmap
from typing import Any

from vmmio.memory import GuestMemory
from vmmio.vmm.plan import Access, Run
from vmmio.vmm.tlb import Groups
from vmmio.x86.regs import MASK, NO_REG, RIP_REG

LearnArgs = tuple[
    int, int, bytes, list[tuple[int, int]], tuple[int, int, int, int, int], tuple[int, int, int], Any
]

_U64 = MASK[8]


def host_address(buffer: mmap.mmap | memoryview) -> int:
    """Where `buffer` (guest RAM, which never moves) is in this process."""
    return ctypes.addressof(ctypes.c_char.from_buffer(buffer))


class Learner:
    """Builds `FastPath.learn` arguments for one vCPU's plans over `memory` (host addresses cached)."""

    def __init__(self, memory: GuestMemory) -> None:
        self._memory = memory
        self._addresses: dict[int, int] = {}  # id(region.mem) or id(region.qwords) -> host address

    def _address(self, buffer: mmap.mmap | memoryview) -> int:
        address = self._addresses.get(id(buffer))
        if address is None:
            for region in self._memory.ram:  # keep the id stable: the buffer must be a region's own
                if buffer is region.mem or buffer is region.qwords:
                    address = self._addresses[id(buffer)] = host_address(region.mem)
                    break
            else:
                raise ValueError("not a view of guest RAM")
        return address

    def _checks(self, groups: Groups, out: list[tuple[int, int]]) -> None:
        for view, get, expected in groups:
            base = self._address(view)
            indices = get.__reduce__()[1]  # itemgetter(*indices): its arguments, as pickling gives them
            values = expected if len(indices) > 1 else (expected,)
            out.extend((base + 8 * i, v) for i, v in zip(indices, values, strict=True))

    def args(self, cur: Run, a: Access) -> LearnArgs:
        """`learn`'s arguments (all but the control key) for `cur`'s plan with its access `a`."""
        plan, insn, direct = cur.plan, cur.insn, cur.direct
        mem = insn.mem
        assert direct is not None and mem is not None and a.user
        checks: list[tuple[int, int]] = []
        self._checks(plan.groups, checks)
        self._checks(a.groups, checks)
        mask = MASK[mem.addr_size]
        if mem.index == NO_REG and (mem.base < 0 or mem.base == RIP_REG):
            base = ((plan.next_rip if mem.base == RIP_REG else 0) + mem.disp) & mask
            ea = (-2, -1, 1, base, mask)  # a constant address
        else:
            ea = (mem.base, mem.index, mem.scale, mem.disp & _U64, mask)
        reg, high = cur.direct_reg, 0
        if insn.width == 1 and 4 <= reg < 8 and not insn.rex:
            reg, high = reg - 4, 1  # AH, CH, DH, BH
        if direct.load:
            kind, imm = 0, 0
        elif cur.direct_data >= 0:
            kind, imm = 1, cur.direct_data
        else:
            kind, imm = 2, 0
        completion = (
            int(direct.load),
            int(direct.signed),
            cur.direct_size,
            insn.width,
            reg,
            high,
            kind,
            imm,
            plan.next_rip,
        )
        code_addr = self._address(plan.mem) + plan.off
        return (plan.rip, code_addr, insn.raw, checks, ea, (a.off, a.ac, a.pages[0]), completion)
